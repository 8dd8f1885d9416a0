"""Elastic Email: the official SDK (ElasticEmail) and plain HTTP against the fake's API v4 transactional
send, its 429 and 5xx answers, and its 400s following the API reference."""

from __future__ import annotations

import ElasticEmail
import pytest
import requests
from ElasticEmail.api.emails_api import EmailsApi
from ElasticEmail.exceptions import ApiException as ElasticEmailError
from ElasticEmail.models.body_content_type import BodyContentType
from ElasticEmail.models.body_part import BodyPart
from ElasticEmail.models.email_content import EmailContent
from ElasticEmail.models.email_transactional_message_data import EmailTransactionalMessageData
from ElasticEmail.models.transactional_recipient import TransactionalRecipient

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import THROTTLE, accepted, kept, new_id, post, replies, reply_fault

EE = {"X-ElasticEmail-ApiKey": "ee-key"}
ROUTES = [("/v4/emails/transactional", EE)]


def elasticemail_send(esp: EspProcess, cid: str, key: str = "ee-key", ca: str | None = None):
    config = ElasticEmail.Configuration(host=esp.http_url + "/v4")
    config.api_key["apikey"] = key
    if ca is not None:
        config.ssl_ca_cert = ca  # the generated client reads certifi, not the environment
    data = EmailTransactionalMessageData(
        Recipients=TransactionalRecipient(To=["user@example.test"]),
        Content=EmailContent(
            From="App <app@example.test>",
            Subject="s",
            Body=[BodyPart(ContentType=BodyContentType.PLAINTEXT, Content="b")],
            Headers={CORRELATION_HEADER: cid},
        ),
    )
    with ElasticEmail.ApiClient(config) as api:
        return EmailsApi(api).emails_transactional_post(data)


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id as the Postback."""
    content = {
        "From": "a@example.test",
        "Postback": cid,
        "Body": [{"ContentType": "PlainText", "Content": "b"}],
    }
    body = {"Recipients": {"To": ["u@example.test"]}, "Content": content}
    r = requests.post(
        f"{url}/v4/emails/transactional", json=body, headers={"X-ElasticEmail-ApiKey": "k"}, timeout=10
    )
    assert r.status_code == 200, r.text


def test_elasticemail_send_is_accepted_and_in_the_ledger(esp):
    """Elastic Email v4 via ElasticEmail: 200 {TransactionID, MessageID}; the id came from Content.Headers."""
    cid = new_id()
    out = elasticemail_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert out.message_id == rec["esp_id"] and out.transaction_id and rec["key"] == fingerprint("ee-key")


def test_elasticemail_429_from_the_throttle(esp):
    """Elastic Email: the SDK raises ApiException with status 429 and the {"Error": ...} body."""
    esp.control.add_fault(THROTTLE)
    elasticemail_send(esp, new_id())
    with pytest.raises(ElasticEmailError) as err:
        elasticemail_send(esp, new_id())
    assert err.value.status == 429 and '"Error"' in err.value.body
    assert err.value.headers["Retry-After"] == "20"


def test_elasticemail_429_over_plain_http(esp):
    """Over plain HTTP the second send in the window gets {"Error": ...} and Retry-After; the refusal is
    in the ledger."""
    esp.control.add_fault(THROTTLE)
    refused = replies(esp, "elasticemail", 429)
    body = {
        "Recipients": {"To": ["u@b.test"]},
        "Content": {"From": "a@b.test", "Body": [{"ContentType": "x"}]},
    }
    assert post(esp, "/v4/emails/transactional", EE, json=body).status_code < 300
    r = post(esp, "/v4/emails/transactional", EE, json=body)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert "Error" in r.json()
    assert replies(esp, "elasticemail", 429) == refused + 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches the SDK as ApiException with that status; nothing is kept."""
    before, answered = kept(esp), replies(esp, "elasticemail", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(ElasticEmailError) as err:
        elasticemail_send(esp, new_id())
    assert err.value.status == status
    assert kept(esp) == before and replies(esp, "elasticemail", status) == answered + 1


def test_elasticemail_bad_bodies(esp):
    """Elastic Email: 400 {"Error": ...} naming the field; no X-ElasticEmail-ApiKey is 401."""
    r = post(esp, "/v4/emails/transactional", EE, data=b"[1,")
    assert r.status_code == 400 and "Error" in r.json()
    r = post(esp, "/v4/emails/transactional", EE, json={"Recipients": {"To": ["u@b.test"]}})
    assert r.status_code == 400 and r.json() == {"Error": "Content is required"}
    r = post(esp, "/v4/emails/transactional", {}, json={})
    assert r.status_code == 401
