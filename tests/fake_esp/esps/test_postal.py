"""Postal: plain HTTP against the fake's /api/v1/send/message and /send/raw (Postal has no official
Python SDK; anymail's Postal backend runs in test_https_sdks.py): its HTTP-200 status envelope for
every outcome, a fault's 429/5xx from the proxy in front of it, and its RSA-signed webhooks."""

from __future__ import annotations

import base64

import pytest
import requests

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

PO = {"X-Server-API-Key": "postal-key", "Content-Type": "application/json"}
ROUTES = [("/api/v1/send/message", PO), ("/api/v1/send/raw", PO)]


def message(cid: str, to: list[str] | None = None) -> dict:
    return {"to": to or ["u@example.test"], "from": "app@example.test", "subject": "s", "plain_body": "b",
            "headers": {CORRELATION_HEADER: cid}}  # fmt: skip


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id as the message's tag (what Postal's webhooks
    echo) and in its headers."""
    body = {**message(cid), "tag": cid}
    r = requests.post(f"{url}/api/v1/send/message", json=body, headers={"X-Server-API-Key": "k"}, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "success", r.text


def test_postal_send_message_is_accepted_with_one_id_per_recipient(esp):
    """/send/message: status success, data.messages {rcpt: {id, token}}; the first id is the ledger's."""
    cid = new_id()
    r = post(esp, "/api/v1/send/message", PO, json=message(cid, ["a@example.test", "b@example.test"]))
    data = r.json()["data"]
    assert r.status_code == 200 and r.json()["status"] == "success" and data["message_id"]
    ids = [data["messages"][a]["id"] for a in ("a@example.test", "b@example.test")]
    (rec,) = accepted(esp, cid)
    assert (
        ids[1] == ids[0] + 1 and rec["esp_id"] == str(ids[0]) and rec["rcpts"] == 2 and rec["api"] == "postal"
    )


def test_postal_send_raw_reads_the_id_from_the_mime(esp):
    """/send/raw: rcpt_to, mail_from and base64 data; the correlation header comes from the MIME."""
    cid = new_id()
    mime = f"From: app@example.test\r\nTo: u@example.test\r\n{CORRELATION_HEADER}: {cid}\r\n\r\nb\r\n"
    body = {"rcpt_to": ["u@example.test"], "mail_from": "app@example.test",
            "data": base64.b64encode(mime.encode()).decode()}  # fmt: skip
    r = post(esp, "/api/v1/send/raw", PO, json=body)
    assert r.json()["status"] == "success" and accepted(esp, cid)


def test_postal_form_encoded_params_are_read(esp):
    """Postal reads the JSON in a form body's ``params`` field, as its Moonrope clients send it."""
    import orjson

    cid = new_id()
    form = {"params": orjson.dumps(message(cid)).decode()}
    r = requests.post(
        esp.http_url + "/api/v1/send/message", data=form, headers={"X-Server-API-Key": "k"}, timeout=10
    )
    assert r.json()["status"] == "success" and accepted(esp, cid)


def test_postal_throttle_is_the_proxys_429_in_postals_envelope(esp):
    """A throttle fault: HTTP 429 with Retry-After and Postal's {"status": "error", data: {code}}."""
    esp.control.add_fault(THROTTLE)
    post(esp, "/api/v1/send/message", PO, json=message(new_id()))
    r = post(esp, "/api/v1/send/message", PO, json=message(new_id()))
    assert r.status_code == 429 and r.json()["status"] == "error" and int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_is_answered_and_nothing_kept(esp, status):
    before, answered = kept(esp), replies(esp, "postal", status)
    esp.control.add_fault(reply_fault(status))
    r = post(esp, "/api/v1/send/message", PO, json=message(new_id()))
    assert r.status_code == status and r.json()["status"] == "error"
    assert kept(esp) == before and replies(esp, "postal", status) == answered + 1


def test_postal_bad_requests_are_errors_in_its_200_envelope(esp):
    """Postal: HTTP 200 with status error {code, message} or parameter-error {message}; Rails' 400 for a
    body that is not JSON; AccessDenied without a key."""
    cases = [
        ("/api/v1/send/message", {"from": "a@b.test", "plain_body": "x"}, "error", "NoRecipients"),
        ("/api/v1/send/message", {"to": ["u@b.test"], "plain_body": "x"}, "error", "FromAddressMissing"),
        ("/api/v1/send/message", {"to": ["u@b.test"], "from": "a@b.test"}, "error", "NoContent"),
        ("/api/v1/send/message", {**message("x", [f"u{i}@b.test" for i in range(51)])}, "error",
         "TooManyToAddresses"),
        ("/api/v1/send/raw", {"mail_from": "a@b.test", "data": "eA=="}, "parameter-error", None),
    ]  # fmt: skip
    for path, body, status, code in cases:
        r = post(esp, path, PO, json=body)
        assert r.status_code == 200 and r.json()["status"] == status, (body, r.text)
        assert r.json()["data"].get("code") == code
    r = post(esp, "/api/v1/send/message", PO, data=b'{"to": ')
    assert r.status_code == 400
    r = post(esp, "/api/v1/send/message", {"Content-Type": "application/json"}, json=message("x"))
    assert r.status_code == 200 and r.json()["data"]["code"] == "AccessDenied"


def test_each_accepted_message_is_delivered_once_as_a_postal_event(tmp_path):
    """Five messages: exactly one MessageSent each, carrying the correlation id (the tag) and the
    message id from the ledger."""
    assert_delivered_once(tmp_path, "postal", send_plain)
