"""SparkPost: the official SDK (sparkpost) and plain HTTP against the fake's /api/v1/transmissions, its
429 (the SDK's SparkPostAPIException) and 5xx answers, its {"errors": [...]} 400/422s, and its batched
webhooks."""

from __future__ import annotations

import pytest
import requests
from sparkpost import SparkPost
from sparkpost.exceptions import SparkPostAPIException

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

SP = {"Authorization": "sp-key", "Content-Type": "application/json"}
ROUTES = [("/api/v1/transmissions", SP)]


def sparkpost_client(esp: EspProcess, key: str = "sp-key") -> SparkPost:
    host = esp.http_url.split("://", 1)[1]
    sp = SparkPost(key, base_uri=host)  # the SDK builds https://<base_uri>/api/v1 itself
    if esp.http_url.startswith("http://"):
        # This module's ESP is plain http; test_https_sdks.py runs the SDK over https as shipped.
        sp.transmissions.base_uri = f"{esp.http_url}/api/v1"
    return sp


def sparkpost_send(esp: EspProcess, cid: str, key: str = "sp-key"):
    return sparkpost_client(esp, key).transmissions.send(
        recipients=["user@example.test"],
        from_email="App <app@example.test>",
        subject="s",
        text="b",
        custom_headers={CORRELATION_HEADER: cid},
    )


def send_plain(url: str, cid: str) -> None:
    """One transmission over plain HTTP, the correlation id in the transmission's metadata."""
    body = {
        "recipients": [{"address": {"email": "u@example.test"}}],
        "content": {"from": "a@example.test", "subject": "s", "text": "b"},
        "metadata": {CORRELATION_HEADER: cid},
    }
    r = requests.post(f"{url}/api/v1/transmissions", json=body, headers={"Authorization": "k"}, timeout=10)
    assert r.status_code == 200, r.text


def test_sparkpost_send_is_accepted_and_in_the_ledger(esp):
    """SparkPost: results {total_accepted_recipients, id}; the transmission id is the ledger's esp_id."""
    cid = new_id()
    out = sparkpost_send(esp, cid)
    assert (out["total_accepted_recipients"], out["total_rejected_recipients"]) == (1, 0)
    (rec,) = accepted(esp, cid)
    assert rec["esp_id"] == out["id"] and rec["api"] == "sparkpost" and rec["rcpts"] == 1


def test_sparkpost_rfc822_content_carries_the_id_in_its_headers(esp):
    """content.email_rfc822: the whole MIME message; the correlation header is read from it."""
    cid = new_id()
    mime = f"From: a@example.test\r\nTo: u@example.test\r\n{CORRELATION_HEADER}: {cid}\r\n\r\nb\r\n"
    body = {"recipients": [{"address": "u@example.test"}], "content": {"email_rfc822": mime}}
    r = post(esp, "/api/v1/transmissions/", SP, json=body)
    assert r.status_code == 200 and accepted(esp, cid)[0]["esp_id"] == r.json()["results"]["id"]


def test_sparkpost_429_is_the_sdks_api_exception(esp):
    """A throttled send: 429 {"errors": [{"message"}]} with Retry-After, raised by the SDK as its
    SparkPostAPIException with status 429."""
    esp.control.add_fault(THROTTLE)
    sparkpost_send(esp, new_id())
    with pytest.raises(SparkPostAPIException) as err:
        sparkpost_send(esp, new_id())
    assert err.value.status == 429 and "Throttling failure" in err.value.errors[0]
    assert int(err.value.response.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches the SDK as a SparkPostAPIException of that status."""
    before, answered = kept(esp), replies(esp, "sparkpost", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(SparkPostAPIException) as err:
        sparkpost_send(esp, new_id())
    assert err.value.status == status
    assert kept(esp) == before and replies(esp, "sparkpost", status) == answered + 1


def test_sparkpost_malformed_bodies_get_its_errors(esp):
    """SparkPost: {"errors": [{"message", "description", "code"}]}: 400 code 1300 for a body that is not
    JSON, 422 code 1400 for a missing field and 1200 for an invalid one; 401 without a key."""
    r = post(esp, "/api/v1/transmissions", SP, data=b'{"content": ')
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "1300"
    r = post(esp, "/api/v1/transmissions", SP, json={"content": {"from": "a@b.test", "text": "x"}})
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "1400"
    bad = {"recipients": [{"address": {"email": "nope"}}], "content": {"from": "a@b.test", "text": "x"}}
    r = post(esp, "/api/v1/transmissions", SP, json=bad)
    assert r.status_code == 422 and r.json()["errors"][0]["code"] == "1200"
    r = post(esp, "/api/v1/transmissions", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 401 and r.json()["errors"][0]["message"] == "Unauthorized."


def test_each_accepted_message_is_delivered_once_as_a_sparkpost_event(tmp_path):
    """Five transmissions: exactly one delivery event each, carrying the correlation id (rcpt_meta) and
    the transmission id from the ledger."""
    assert_delivered_once(tmp_path, "sparkpost", send_plain)
