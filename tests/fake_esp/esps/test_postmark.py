"""Postmark: the official SDK (postmarker) and plain HTTP against the fake's /email and /email/batch, its
429 and 5xx answers, its 422s, and its webhooks."""

from __future__ import annotations

import pytest
import requests
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError as PostmarkError

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

PM = {"X-Postmark-Server-Token": "pm-token", "Content-Type": "application/json"}
ROUTES = [("/email", PM), ("/email/batch", PM)]


def postmark_send(esp: EspProcess, cid: str, key: str = "pm-token"):
    client = PostmarkClient(server_token=key, root_api_url=esp.http_url)
    return client.emails.send(
        From="app@example.test",
        To="user@example.test",
        Subject="s",
        TextBody="b",
        Metadata={"mailstorm_id": cid},
    )


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id in Metadata."""
    body = {
        "From": "a@example.test",
        "To": "u@example.test",
        "TextBody": "b",
        "Metadata": {CORRELATION_HEADER: cid},
    }
    r = requests.post(f"{url}/email", json=body, headers={"X-Postmark-Server-Token": "k"}, timeout=10)
    assert r.status_code == 200, r.text


def test_postmark_send_is_accepted_and_in_the_ledger(esp):
    """Postmark: ErrorCode 0 and a MessageID; the id came from Metadata."""
    cid = new_id()
    out = postmark_send(esp, cid)
    assert out["ErrorCode"] == 0 and out["Message"] == "OK"
    (rec,) = accepted(esp, cid)
    assert rec["esp_id"] == out["MessageID"] and rec["api"] == "postmark"


def test_postmark_batch_accepts_each_message(esp):
    """Postmark /email/batch: one answer and one ledger record per message, each with its own id."""
    ids = [new_id() for _ in range(3)]
    client = PostmarkClient(server_token="pm-token", root_api_url=esp.http_url)
    out = client.emails.send_batch(
        *[
            {
                "From": "a@example.test",
                "To": "b@example.test",
                "TextBody": "b",
                "Metadata": {"mailstorm_id": i},
            }
            for i in ids
        ]
    )
    assert [o["ErrorCode"] for o in out] == [0, 0, 0]
    assert [accepted(esp, i)[0]["esp_id"] for i in ids] == [o["MessageID"] for o in out]


def test_postmark_429_from_the_throttle(esp):
    """Postmark: postmarker raises ClientError with ErrorCode 429 over an HTTP 429."""
    esp.control.add_fault(THROTTLE)
    postmark_send(esp, new_id())
    with pytest.raises(PostmarkError) as err:
        postmark_send(esp, new_id())
    assert err.value.error_code == 429
    assert err.value.__cause__.response.status_code == 429


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches postmarker as a ClientError over that status; nothing kept."""
    before, answered = kept(esp), replies(esp, "postmark", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(PostmarkError) as err:
        postmark_send(esp, new_id())
    assert err.value.__cause__.response.status_code == status
    assert kept(esp) == before and replies(esp, "postmark", status) == answered + 1


def test_postmark_malformed_json_and_missing_fields(esp):
    """Postmark: 422 {"ErrorCode", "Message"} (402 invalid JSON, 300 invalid email request); 401 code 10."""
    r = post(esp, "/email", PM, data=b'{"From": ')
    assert r.status_code == 422 and r.json()["ErrorCode"] == 402
    r = post(esp, "/email", PM, json={"From": "a@b.test", "TextBody": "x"})
    assert r.status_code == 422 and r.json()["ErrorCode"] == 300 and "To" in r.json()["Message"]
    r = post(esp, "/email/batch", PM, json={"From": "a@b.test"})
    assert r.status_code == 422 and r.json()["ErrorCode"] == 403
    r = post(esp, "/email", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 401 and r.json()["ErrorCode"] == 10


def test_each_accepted_message_is_delivered_once_as_a_postmark_event(tmp_path):
    """Five messages: exactly one delivered event each, in Postmark's format, carrying the correlation id
    (Metadata) and the ESP's MessageID from the ledger."""
    assert_delivered_once(tmp_path, "postmark", send_plain)
