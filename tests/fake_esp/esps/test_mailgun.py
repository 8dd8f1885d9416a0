"""Mailgun: the official SDK (mailgun) and plain HTTP against the fake's messages API, its 429 (with
Retry-After the SDK honours) and 5xx answers, its 400s, and its signed webhooks with Mailgun's give-up
rules."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import requests
from mailgun.client import Client as MailgunClient
from mailgun.config import RetryPolicy

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import (
    SIGNING_KEY,
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
    webhook_records,
)

DOMAIN = "mg.example.test"
MG = {"Authorization": "Basic " + base64.b64encode(b"api:mg-key").decode()}
ROUTES = [("/v3/mg.example.test/messages", MG), ("/v3/mg.example.test/messages.mime", MG)]


def mailgun_send(esp: EspProcess, cid: str, key: str = "mg-key", retries: int = 0):
    client = MailgunClient(
        auth=("api", key), api_url=esp.http_url, retry_policy=RetryPolicy(max_retries=retries)
    )
    data = {"from": "app@example.test", "to": "user@example.test", "subject": "s", "text": "b"}
    return client.messages.create(data={**data, f"h:{CORRELATION_HEADER}": cid}, domain=DOMAIN)


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP (form fields), the correlation id as a v: variable."""
    auth = {"Authorization": "Basic " + base64.b64encode(b"api:k").decode()}
    data = {"from": "a@example.test", "to": "u@example.test", "text": "b", f"v:{CORRELATION_HEADER}": cid}
    r = requests.post(f"{url}/v3/{DOMAIN}/messages", data=data, headers=auth, timeout=10)
    assert r.status_code == 200, r.text


def test_mailgun_send_is_accepted_and_in_the_ledger(esp):
    """Mailgun: 200 {"id", "message": "Queued. Thank you."}; the id came from the h: header field."""
    cid = new_id()
    resp = mailgun_send(esp, cid)
    assert resp.status_code == 200 and resp.json()["message"] == "Queued. Thank you."
    (rec,) = accepted(esp, cid)
    assert resp.json()["id"] == f"<{rec['esp_id']}@{DOMAIN}>" and rec["key"] == fingerprint("mg-key")


def test_mailgun_429_from_the_throttle_and_the_sdk_honours_retry_after(esp):
    """Mailgun: the SDK returns the 429 (it does not raise on HTTP status); with retries on, it waits
    the Retry-After the fake sent and the retry is accepted once the bucket has refilled."""
    esp.control.add_fault({**THROTTLE, "rate": 1.0})
    mailgun_send(esp, new_id())
    resp = mailgun_send(esp, new_id())
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert resp.json() == {"message": "Throttling failure: Maximum sending rate exceeded"}
    cid = new_id()
    assert mailgun_send(esp, cid, retries=2).status_code == 200
    assert len(accepted(esp, cid)) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http: the SDK returns that status (it does not raise); nothing is kept."""
    before, answered = kept(esp), replies(esp, "mailgun", status)
    esp.control.add_fault(reply_fault(status))
    assert mailgun_send(esp, new_id()).status_code == status
    assert kept(esp) == before and replies(esp, "mailgun", status) == answered + 1


def test_mailgun_broken_multipart_and_missing_fields(esp):
    """Mailgun: a multipart body that does not parse, or a missing field, is 400 {"message": ...}."""
    broken = {**MG, "Content-Type": "multipart/form-data; boundary=XyZ"}
    r = post(esp, "/v3/mg.example.test/messages", broken, data=b"--XyZ\r\nContent-Disposition: form-da")
    assert r.status_code == 400 and "message" in r.json()
    r = post(esp, "/v3/mg.example.test/messages", {**MG, "Content-Type": "multipart/form-data"}, data=b"x")
    assert r.status_code == 400
    r = post(esp, "/v3/mg.example.test/messages", MG, files={"to": (None, "a@b.test"), "text": (None, "x")})
    assert r.status_code == 400 and r.json()["message"] == "'from' parameter is missing"
    r = post(esp, "/v3/mg.example.test/messages.mime", MG, data={"to": "a@b.test"})
    assert r.status_code == 400 and r.json()["message"] == "'message' parameter is missing"
    r = post(esp, "/v3/mg.example.test/messages", {}, data={"from": "a@b.test"})
    assert r.status_code == 401


def test_each_accepted_message_is_delivered_once_as_a_signed_mailgun_event(tmp_path):
    """Five messages: exactly one delivered event each in Mailgun's format, signed as Mailgun signs
    (HMAC-SHA256 of timestamp + token with the signing key)."""
    for e in assert_delivered_once(tmp_path, "mailgun", send_plain):
        sig = e["raw"]["signature"]
        mac = hmac.new(SIGNING_KEY.encode(), (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256)
        assert mac.hexdigest() == sig["signature"]


def test_mailgun_gives_up_as_mailgun_does(tmp_path):
    """Mailgun does not retry a 406, nor ever a delivered event: one attempt each, final, not ok."""
    with Receiver(fail_first=2, fail_status=406) as rx:
        esp = start_esp(tmp_path, rx.url, retry_time_scale=0.001, events={"open": 1.0})
        try:
            send_plain(esp.http_url, "mg-406")
            wait_until(lambda: sum(r["final"] for r in webhook_records(esp)) >= 2)
        finally:
            esp.stop()
    recs = webhook_records(esp)
    assert sorted((r["event"], r["attempt"], r["status"], r["ok"]) for r in recs) == [
        ("delivered", 1, 406, False), ("open", 1, 406, False),
    ]  # fmt: skip
