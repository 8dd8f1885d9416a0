"""Resend: the official SDK (resend) and plain HTTP against the fake's /emails and /emails/batch, its
429 (the SDK's RateLimitError) and 5xx answers, its 400/401/422s, and its Svix-signed webhooks."""

from __future__ import annotations

import pytest
import requests
import resend
from resend.exceptions import ApplicationError, RateLimitError, ResendError

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

RS = {"Authorization": "Bearer re_test", "Content-Type": "application/json"}
ROUTES = [("/emails", RS), ("/emails/batch", RS)]


def resend_params(cid: str) -> dict:
    return {
        "from": "App <app@example.test>",
        "to": ["user@example.test"],
        "subject": "s",
        "text": "b",
        "headers": {CORRELATION_HEADER: cid},
    }


def resend_send(esp: EspProcess, cid: str, key: str = "re_test"):
    # The SDK's configuration is module-wide, as in production: the key and the base URL.
    resend.api_key, resend.api_url = key, esp.http_url
    return resend.Emails.send(resend_params(cid))


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id as a tag."""
    body = {"from": "a@example.test", "to": "u@example.test", "subject": "s", "text": "b",
            "tags": [{"name": CORRELATION_HEADER, "value": cid}]}  # fmt: skip
    r = requests.post(f"{url}/emails", json=body, headers={"Authorization": "Bearer re_k"}, timeout=10)
    assert r.status_code == 200, r.text


def test_resend_send_is_accepted_and_in_the_ledger(esp):
    """Resend: 200 {"id"}, which the ledger keeps as the esp_id of the message."""
    cid = new_id()
    out = resend_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert rec["esp_id"] == out["id"] and rec["api"] == "resend"


def test_resend_batch_accepts_each_message(esp):
    """/emails/batch: {"data": [{"id"}, ...]} in order, one ledger record per email."""
    ids = [new_id() for _ in range(3)]
    resend.api_key, resend.api_url = "re_test", esp.http_url
    out = resend.Batch.send([resend_params(i) for i in ids])
    assert [accepted(esp, i)[0]["esp_id"] for i in ids] == [d["id"] for d in out["data"]]


def test_resend_429_is_the_sdks_rate_limit_error(esp):
    """A throttled send: 429 rate_limit_exceeded with ratelimit-* and retry-after, raised by the SDK as
    its RateLimitError carrying those headers."""
    esp.control.add_fault(THROTTLE)
    resend_send(esp, new_id())
    with pytest.raises(RateLimitError) as err:
        resend_send(esp, new_id())
    assert err.value.code == 429 and err.value.error_type == "rate_limit_exceeded"
    headers = {k.lower(): v for k, v in err.value.headers.items()}
    assert headers["ratelimit-remaining"] == "0" and int(headers["retry-after"]) >= 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches the SDK as a ResendError of that status; nothing kept."""
    before, answered = kept(esp), replies(esp, "resend", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(ApplicationError if status == 500 else ResendError) as err:
        resend_send(esp, new_id())
    assert int(err.value.code) == status
    assert kept(esp) == before and replies(esp, "resend", status) == answered + 1


def test_resend_malformed_bodies_get_its_4xx(esp):
    """Resend: {"statusCode", "message", "name"}: 400 validation_error for a body that is not JSON, 422
    missing_required_field / validation_error, 401 missing_api_key without a key."""
    r = post(esp, "/emails", RS, data=b'{"from": ')
    assert r.status_code == 400 and r.json()["name"] == "validation_error" and r.json()["statusCode"] == 400
    r = post(esp, "/emails", RS, json={"from": "a@b.test", "subject": "s"})
    assert (
        r.status_code == 422 and r.json()["name"] == "missing_required_field" and "to" in r.json()["message"]
    )
    r = post(esp, "/emails", RS, json={"from": "a@b.test", "to": ["nope"], "subject": "s"})
    assert r.status_code == 422 and r.json()["name"] == "validation_error"
    r = post(esp, "/emails/batch", RS, json={"from": "a@b.test"})
    assert r.status_code == 422
    r = post(esp, "/emails", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 401 and r.json()["name"] == "missing_api_key"


def test_each_accepted_message_is_delivered_once_as_a_resend_event(tmp_path):
    """Five messages: exactly one email.delivered each, carrying the correlation id (tags) and the id
    the send answered."""
    assert_delivered_once(tmp_path, "resend", send_plain)
