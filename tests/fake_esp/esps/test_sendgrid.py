"""SendGrid: the official SDK (sendgrid) and plain HTTP against the fake's v3 Mail Send API, its 429 and
5xx answers, its 400s naming the field, and its Event Webhook."""

from __future__ import annotations

import pytest
import requests
from python_http_client.exceptions import InternalServerError, ServiceUnavailableError, TooManyRequestsError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import (
    THROTTLE,
    Receiver,
    accepted,
    assert_delivered_once,
    kept,
    new_id,
    post,
    replies,
    reply_fault,
    start_esp,
    wait_until,
)

SG = {"Authorization": "Bearer SG.key", "Content-Type": "application/json"}
ROUTES = [("/v3/mail/send", SG)]


def sendgrid_send(esp: EspProcess, cid: str, key: str = "SG.test-key"):
    mail = Mail(
        from_email="app@example.test", to_emails="user@example.test", subject="s", plain_text_content="b"
    )
    mail.custom_arg = CustomArg(CORRELATION_HEADER, cid)
    return SendGridAPIClient(key, host=esp.http_url).send(mail)


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id in custom_args."""
    body = {
        "personalizations": [{"to": [{"email": "u@example.test"}], "custom_args": {CORRELATION_HEADER: cid}}],
        "from": {"email": "a@example.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "b"}],
    }
    r = requests.post(f"{url}/v3/mail/send", json=body, headers={"Authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 202, r.text


def test_sendgrid_send_is_accepted_and_in_the_ledger(esp):
    """SendGrid: 202 with X-Message-Id; the ledger has the message with its custom_args correlation id,
    and the key's fingerprint (never the key itself)."""
    cid = new_id()
    resp = sendgrid_send(esp, cid)
    assert resp.status_code == 202
    (rec,) = accepted(esp, cid)
    assert (rec["proto"], rec["api"], rec["key"], rec["esp_id"]) == (
        "http", "sendgrid", fingerprint("SG.test-key"), resp.headers["X-Message-Id"],
    )  # fmt: skip


def test_sendgrid_429_from_the_throttle(esp):
    """SendGrid: the second send in the bucket's window is TooManyRequestsError with X-RateLimit-* headers."""
    esp.control.add_fault({**THROTTLE, "reply": "429 too many requests"})
    sendgrid_send(esp, new_id())
    with pytest.raises(TooManyRequestsError) as err:
        sendgrid_send(esp, new_id())
    assert err.value.status_code == 429
    headers = err.value.headers
    assert headers["X-RateLimit-Limit"] == "1" and headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) >= 1 and int(headers["X-RateLimit-Reset"]) > 0
    sendgrid_send(esp, new_id(), key="SG.other-key")  # a bucket per API key: another key still passes


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches the SDK as its error for that status; nothing is kept."""
    before, answered = kept(esp), replies(esp, "sendgrid", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(InternalServerError if status == 500 else ServiceUnavailableError) as err:
        sendgrid_send(esp, new_id())
    assert err.value.status_code == status
    assert kept(esp) == before and replies(esp, "sendgrid", status) == answered + 1


def test_sendgrid_malformed_json_and_missing_fields(esp):
    """SendGrid: 400 {"errors": [{message, field}]}, the field named; no Bearer key is a 401."""
    r = post(esp, "/v3/mail/send", SG, data=b'{"personalizations": [')
    assert r.status_code == 400 and "not valid JSON" in r.json()["errors"][0]["message"]
    r = post(esp, "/v3/mail/send", SG, json={"personalizations": [{"to": [{"email": "a@b.test"}]}]})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "from"
    body = {"from": {"email": "a@b.test"}, "subject": "s", "content": [{"type": "text/plain", "value": "x"}]}
    r = post(esp, "/v3/mail/send", SG, json=body)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "personalizations"
    r = post(esp, "/v3/mail/send", SG, json={**body, "personalizations": [{"to": [{"email": "nope"}]}]})
    assert r.json()["errors"][0]["field"] == "personalizations.0.to.0.email"
    r = post(esp, "/v3/mail/send", {"Content-Type": "application/json"}, json=body)
    assert r.status_code == 401 and "errors" in r.json()


def test_each_accepted_message_is_delivered_once_as_a_sendgrid_event(tmp_path):
    """Five messages: exactly one delivered event each, in SendGrid's format (a batched JSON array),
    carrying the correlation id and the ESP's message id from the ledger."""
    assert_delivered_once(tmp_path, "sendgrid", send_plain)


def test_every_personalizations_events_carry_the_requests_x_message_id(tmp_path):
    """Two personalizations in one request: one X-Message-Id answered; each message has its own id in the
    ledger, and each one's events carry an sg_message_id starting with the X-Message-Id."""
    body = {
        "personalizations": [
            {"to": [{"email": f"u{i}@example.test"}], "custom_args": {CORRELATION_HEADER: f"pers-{i}"}}
            for i in range(2)
        ],
        "from": {"email": "a@example.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "b"}],
    }
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            r = post(esp, "/v3/mail/send", SG, json=body)
            assert r.status_code == 202
            wait_until(lambda: len(rx.events()) >= 2)
            esp_ids = [accepted(esp, f"pers-{i}")[0]["esp_id"] for i in range(2)]
        finally:
            esp.stop()
        events = rx.events()
    x_id = r.headers["X-Message-Id"]
    assert esp_ids[0] == x_id and len(set(esp_ids)) == 2
    assert sorted(e["esp_id"] for e in events) == sorted(esp_ids)
    assert all(ev["sg_message_id"].startswith(x_id) for e in events for ev in e["raw"])
