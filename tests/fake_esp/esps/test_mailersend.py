"""MailerSend: the official SDK (mailersend) and plain HTTP against the fake's /v1/email and
/v1/bulk-email, its 429 (the SDK's RateLimitExceeded) and 5xx answers, its 422s, and its signed
webhooks."""

from __future__ import annotations

import pytest
import requests
from mailersend import EmailBuilder, MailerSendClient
from mailersend.exceptions import MailerSendError, RateLimitExceeded, ServerError
from requests.adapters import HTTPAdapter

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import (
    THROTTLE,
    accepted,
    assert_delivered_once,
    kept,
    new_id,
    post,
    replies,
    reply_fault,
)

MS = {"Authorization": "Bearer ms-token", "Content-Type": "application/json"}
ROUTES = [("/v1/email", MS), ("/v1/bulk-email", MS)]


def mailersend_client(esp: EspProcess, key: str = "ms-token") -> MailerSendClient:
    # max_retries=0: the SDK retries 429 and 5xx itself by default; the tests look at one answer.
    return MailerSendClient(api_key=key, base_url=f"{esp.http_url}/v1", max_retries=0)


def mailersend_email(cid: str):
    return (
        EmailBuilder()
        .from_email("app@example.com", "App")  # the SDK validates addresses: .test is refused
        .to("user@example.com")
        .subject("s")
        .text("b")
        .header(CORRELATION_HEADER, cid)
        .build()
    )


def mailersend_send(esp: EspProcess, cid: str, key: str = "ms-token"):
    return mailersend_client(esp, key).emails.send(mailersend_email(cid))


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id in headers [{name, value}]."""
    body = {
        "from": {"email": "a@example.test"},
        "to": [{"email": "u@example.test"}],
        "subject": "s",
        "text": "b",
        "headers": [{"name": CORRELATION_HEADER, "value": cid}],
    }
    r = requests.post(f"{url}/v1/email", json=body, headers={"Authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 202, r.text


def test_mailersend_send_is_accepted_and_in_the_ledger(esp):
    """MailerSend: 202 with X-Message-Id, which the ledger keeps as the esp_id of the message."""
    cid = new_id()
    out = mailersend_send(esp, cid)
    assert out.status_code == 202 and out.data["id"]
    (rec,) = accepted(esp, cid)
    assert rec["esp_id"] == out.data["id"] and rec["api"] == "mailersend"


def test_mailersend_bulk_email_accepts_each_message(esp):
    """/v1/bulk-email: 202 with a bulk_email_id, one ledger record per email object."""
    ids = [new_id() for _ in range(3)]
    out = mailersend_client(esp).emails.send_bulk([mailersend_email(i) for i in ids])
    assert out.status_code == 202 and out.data["bulk_email_id"]
    assert all(len(accepted(esp, i)) == 1 for i in ids)


def test_mailersend_429_is_the_sdks_rate_limit_error(esp):
    """A throttled send: 429 {"message"} with X-RateLimit-* and Retry-After. The SDK's own retry
    (urllib3, honouring Retry-After) gives up with its MailerSendError; a client that does its own
    retrying (a plain adapter, as a queue-driven pipeline mounts) gets the SDK's RateLimitExceeded."""
    esp.control.add_fault(THROTTLE)
    mailersend_send(esp, new_id())
    with pytest.raises(MailerSendError, match="too many 429 error responses"):
        mailersend_send(esp, new_id())
    client = mailersend_client(esp)
    client.session.mount("http://", HTTPAdapter())
    with pytest.raises(RateLimitExceeded) as err:
        client.emails.send(mailersend_email(new_id()))
    resp = err.value.response
    assert resp.status_code == 429 and "message" in resp.json()
    assert resp.headers["X-RateLimit-Remaining"] == "0" and int(resp.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches the SDK as its ServerError; nothing kept."""
    before, answered = kept(esp), replies(esp, "mailersend", status)
    esp.control.add_fault(reply_fault(status))
    client = mailersend_client(esp)
    client.session.mount("http://", HTTPAdapter())  # one answer, not the SDK's retries
    with pytest.raises(ServerError):
        client.emails.send(mailersend_email(new_id()))
    assert kept(esp) == before and replies(esp, "mailersend", status) == answered + 1


def test_mailersend_malformed_bodies_get_its_422(esp):
    """MailerSend (Laravel): 422 {"message", "errors": {field: [...]}} for anything it cannot validate,
    unparseable JSON included; 401 {"message": "Unauthenticated."} without a token."""
    r = post(esp, "/v1/email", MS, data=b'{"from": ')
    assert r.status_code == 422 and "from.email" in r.json()["errors"]
    r = post(esp, "/v1/email", MS, json={"from": {"email": "a@b.test"}, "to": [{"email": "x"}], "text": "b"})
    assert r.status_code == 422 and list(r.json()["errors"]) == ["to.0.email"]
    r = post(esp, "/v1/bulk-email", MS, json={"from": {"email": "a@b.test"}})
    assert r.status_code == 422 and r.json()["message"]
    r = post(esp, "/v1/email", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 401 and r.json() == {"message": "Unauthenticated."}


def test_each_accepted_message_is_delivered_once_as_a_mailersend_event(tmp_path):
    """Five messages: exactly one activity.delivered each, carrying the correlation id (email.headers)
    and the X-Message-Id from the ledger."""
    assert_delivered_once(tmp_path, "mailersend", send_plain)
