"""The official SDKs of Mailjet (mailjet-rest), Brevo (brevo-python), Elastic Email (ElasticEmail),
SendPulse (pysendpulse) and Mailchimp Transactional (mailchimp-transactional) against the fake ESP.

Each SDK is pointed at the fake's HTTP port: an accepted send lands in the ledger with its correlation
id (carried where that API lets a sender attach one); a throttle on the API key surfaces as that SDK's
own error with the service's 429 shape; an injected 503 likewise. One fake ESP for the module, reset
between tests.
"""

from __future__ import annotations

import json
import uuid

import ElasticEmail
import httpx
import mailchimp_transactional
import pytest
from brevo import Brevo
from brevo.core.api_error import ApiError as BrevoApiError
from ElasticEmail.api.emails_api import EmailsApi
from ElasticEmail.exceptions import ApiException as ElasticEmailError
from ElasticEmail.models.body_content_type import BodyContentType
from ElasticEmail.models.body_part import BodyPart
from ElasticEmail.models.email_content import EmailContent
from ElasticEmail.models.email_transactional_message_data import EmailTransactionalMessageData
from ElasticEmail.models.transactional_recipient import TransactionalRecipient
from mailchimp_transactional.api_client import ApiClientError
from mailjet_rest import Client as MailjetClient
from mailjet_rest.client import ApiRateLimitError
from mailjet_rest.errors import ApiError as MailjetError
from pysendpulse.pysendpulse import PySendPulse

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port

THROTTLE = {"name": "t", "type": "throttle", "phase": "http", "rate": 0.05, "burst": 1, "key": "api_key"}
OUTAGE = {"name": "down", "type": "reply", "phase": "http", "reply": "503 Service Unavailable"}


@pytest.fixture(scope="module")
def esp_http(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp-more")
    with EspProcess(d / "ledger", http_port=free_port(), seed=9, log_path=d / "esp.log") as proc:
        yield proc
    assert "Traceback" not in (d / "esp.log").read_text(), "the fake ESP logged a traceback"


@pytest.fixture
def esp(esp_http: EspProcess):
    esp_http.control.reset()
    yield esp_http
    esp_http.control.reset()


def accepted(esp: EspProcess, cid: str) -> list[dict]:
    return [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r.get("id") == cid]


def new_id() -> str:
    return f"run-more-{uuid.uuid4().hex[:12]}"


# -- one send per SDK ----------------------------------------------------------------------------------------
def mailjet_client(esp: EspProcess, key: str = "mj-key") -> MailjetClient:
    return MailjetClient(auth=(key, "mj-secret"), version="v3.1", api_url=esp.http_url + "/")


def mailjet_send(esp: EspProcess, cid: str, key: str = "mj-key"):
    message = {
        "From": {"Email": "app@example.test", "Name": "App"},
        "To": [{"Email": "user@example.test"}],
        "Subject": "s",
        "TextPart": "b",
        "CustomID": cid,
    }
    with mailjet_client(esp, key) as client:  # closes the SDK's requests session
        return client.send.create(data={"Messages": [message]})


def brevo_send(esp: EspProcess, cid: str, key: str = "xkeysib-test"):
    with httpx.Client(timeout=10) as http:  # the SDK's transport, closed after the call
        client = Brevo(api_key=key, base_url=esp.http_url + "/v3", max_retries=0, httpx_client=http)
        return client.transactional_emails.send_transac_email(
            sender={"email": "app@example.test", "name": "App"},
            to=[{"email": "user@example.test"}],
            subject="s",
            text_content="b",
            headers={CORRELATION_HEADER: cid},
        )


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


def sendpulse_client(esp: EspProcess, tmp_path, client_id: str = "sp-client") -> PySendPulse:
    """pysendpulse hard-codes its API URL in a private class attribute: a subclass points it at the fake.
    The constructor fetches an OAuth token (POST /oauth/access_token) and keeps it in a file."""
    local = type("LocalSendPulse", (PySendPulse,), {"_PySendPulse__api_url": esp.http_url})
    return local(client_id, "sp-secret", token_file_path=f"{tmp_path}/sp-{uuid.uuid4().hex[:6]}/")


def sendpulse_send(client: PySendPulse, cid: str) -> dict:
    return client.smtp_send_mail(
        {
            "html": "<p>b</p>",
            "text": "b",
            "subject": "s",
            "from": {"name": "App", "email": "app@example.test"},
            "to": [{"name": "User", "email": "user@example.test"}],
            "headers": {CORRELATION_HEADER: cid},
        }
    )


def mandrill_client(esp: EspProcess, key: str = "md-key"):
    client = mailchimp_transactional.Client(key)
    client.api_client.host = (
        esp.http_url + "/api/1.3"
    )  # the SDK's own default is https://mandrillapp.com/api/1.3
    client.set_timeout(10)
    return client


def mandrill_send(esp: EspProcess, cid: str, key: str = "md-key"):
    message = {
        "from_email": "app@example.test",
        "subject": "s",
        "text": "b",
        "to": [{"email": "user@example.test", "type": "to"}],
        "metadata": {"mailstorm_id": cid},
    }
    return mandrill_client(esp, key).messages.send({"message": message})


# -- accepted -> ledger --------------------------------------------------------------------------------------
def test_mailjet_send_is_accepted_and_in_the_ledger(esp):
    """Mailjet v3.1 via mailjet-rest: 200 Messages[0].Status success; the ledger has the message under its
    CustomID, with the MessageID answered as esp_id and the Basic-auth API key as key."""
    cid = new_id()
    out = mailjet_send(esp, cid).json()["Messages"][0]
    assert out["Status"] == "success" and out["CustomID"] == cid
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("mailjet", "mj-key", str(out["To"][0]["MessageID"]))


def test_brevo_send_is_accepted_and_in_the_ledger(esp):
    """Brevo via brevo-python: 201 with messageId; the id came from the custom headers."""
    cid = new_id()
    out = brevo_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert out.message_id == rec["esp_id"] and rec["api"] == "brevo"
    assert rec["key"] == fingerprint("xkeysib-test")


def test_elasticemail_send_is_accepted_and_in_the_ledger(esp):
    """Elastic Email v4 via ElasticEmail: 200 {TransactionID, MessageID}; the id came from Content.Headers."""
    cid = new_id()
    out = elasticemail_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert out.message_id == rec["esp_id"] and out.transaction_id and rec["key"] == fingerprint("ee-key")


def test_sendpulse_send_is_accepted_and_in_the_ledger(esp, tmp_path):
    """SendPulse via pysendpulse: the SDK gets an OAuth token, then /smtp/emails answers {result: true, id};
    the ledger keys the message by the OAuth client id."""
    cid = new_id()
    out = sendpulse_send(sendpulse_client(esp, tmp_path), cid)
    assert out["result"] is True
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("sendpulse", "sp-client", out["id"])


def test_mandrill_send_is_accepted_and_in_the_ledger(esp):
    """Mandrill via mailchimp-transactional (key in the body): one "sent" entry per recipient whose _id is
    the ledger's esp_id; the id came from metadata."""
    cid = new_id()
    (out,) = mandrill_send(esp, cid)
    assert out["status"] == "sent" and out["email"] == "user@example.test"
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("mandrill", fingerprint("md-key"), out["_id"])


# -- throttled -> the service's 429 as the SDK's error -------------------------------------------------------
def test_mailjet_429_from_the_throttle(esp):
    """Mailjet: the second send in the bucket's window raises ApiRateLimitError (status 429) whose body is
    Mailjet's global error shape; another API key has its own bucket."""
    esp.control.add_fault(THROTTLE)
    mailjet_send(esp, new_id())
    cid = new_id()
    with pytest.raises(ApiRateLimitError) as err:
        mailjet_send(esp, cid)
    assert err.value.status_code == 429
    body = json.loads(err.value.response_body)
    assert body["StatusCode"] == 429 and body["ErrorIdentifier"] and "ErrorMessage" in body
    assert accepted(esp, cid) == []
    mailjet_send(esp, new_id(), key="mj-other-key")


def test_brevo_429_from_the_throttle_has_the_sib_ratelimit_headers(esp):
    """Brevo: the SDK raises its ApiError with status 429, body {code: too_many_requests, message} and the
    x-sib-ratelimit-limit/remaining/reset headers."""
    esp.control.add_fault(THROTTLE)
    brevo_send(esp, new_id())
    with pytest.raises(BrevoApiError) as err:
        brevo_send(esp, new_id())
    assert err.value.status_code == 429 and err.value.body["code"] == "too_many_requests"
    headers = err.value.headers
    assert headers["x-sib-ratelimit-limit"] == "1" and headers["x-sib-ratelimit-remaining"] == "0"
    assert int(headers["x-sib-ratelimit-reset"]) >= 1


def test_elasticemail_429_from_the_throttle(esp):
    """Elastic Email: the SDK raises ApiException with status 429 and the {"Error": ...} body."""
    esp.control.add_fault(THROTTLE)
    elasticemail_send(esp, new_id())
    with pytest.raises(ElasticEmailError) as err:
        elasticemail_send(esp, new_id())
    assert err.value.status == 429 and '"Error"' in err.value.body
    assert err.value.headers["Retry-After"] == "20"


def test_sendpulse_429_from_the_throttle(esp, tmp_path):
    """SendPulse: pysendpulse reports errors as a result (it does not raise): {"data": {is_error, http_code:
    429}} — the SDK drops the body, whose shape test_more_esps_errors checks over plain HTTP."""
    client = sendpulse_client(esp, tmp_path)  # the token request comes before the throttle
    esp.control.add_fault(THROTTLE)
    assert sendpulse_send(client, new_id())["result"] is True
    out = sendpulse_send(client, new_id())
    assert out == {"data": {"is_error": True, "http_code": 429}}


def test_mandrill_429_from_the_throttle(esp):
    """Mandrill: the SDK raises ApiClientError with status 429 and Mandrill's error body."""
    esp.control.add_fault(THROTTLE)
    mandrill_send(esp, new_id())
    with pytest.raises(ApiClientError) as err:
        mandrill_send(esp, new_id())
    assert err.value.status_code == 429
    assert err.value.text["status"] == "error" and err.value.text["name"] == "Too_Many_Requests"


# -- an injected 503 -----------------------------------------------------------------------------------------
def test_injected_503_surfaces_in_every_sdk(esp, tmp_path):
    """A 503 reply fault on phase http reaches each SDK as its error (or error result); nothing is kept."""
    sp = sendpulse_client(esp, tmp_path)
    kept_before = LedgerReader(esp.ledger_dir).count(Kind.ESP_ACCEPTED)
    esp.control.add_fault(OUTAGE)
    with pytest.raises(MailjetError) as mj:  # the SDK's base error, raised from requests' HTTPError
        mailjet_send(esp, new_id())
    assert mj.value.__cause__.response.status_code == 503
    with pytest.raises(BrevoApiError) as brevo:
        brevo_send(esp, new_id())
    assert brevo.value.status_code == 503
    with pytest.raises(ElasticEmailError) as ee:
        elasticemail_send(esp, new_id())
    assert ee.value.status == 503
    assert sendpulse_send(sp, new_id())["data"]["http_code"] == 503
    with pytest.raises(ApiClientError) as md:
        mandrill_send(esp, new_id())
    assert md.value.status_code == 503
    assert LedgerReader(esp.ledger_dir).count(Kind.ESP_ACCEPTED) == kept_before
    replied = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["code"] == 503]
    assert {r["api"] for r in replied} >= {"mailjet", "brevo", "elasticemail", "sendpulse", "mandrill"}
