"""Mailjet: the official SDK (mailjet-rest) and plain HTTP against the fake's Send API v3.1, its 429 and
5xx answers, and its 400s following the API reference."""

from __future__ import annotations

import base64
import json

import pytest
import requests
from mailjet_rest import Client as MailjetClient
from mailjet_rest.client import ApiRateLimitError
from mailjet_rest.errors import ApiError as MailjetError

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import (
    THROTTLE,
    Receiver,
    accepted,
    kept,
    new_id,
    post,
    replies,
    reply_fault,
    start_esp,
    wait_until,
)

MJ = {"Authorization": "Basic " + base64.b64encode(b"mj-key:mj-secret").decode()}
ROUTES = [("/v3.1/send", MJ)]
PLAIN = {"From": {"Email": "a@b.test"}, "To": [{"Email": "u@b.test"}], "TextPart": "x"}


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


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id as CustomID."""
    auth = {"Authorization": "Basic " + base64.b64encode(b"k:s").decode()}
    msg = {"From": {"Email": "a@example.test"}, "To": [{"Email": "u@example.test"}], "TextPart": "b",
           "CustomID": cid}  # fmt: skip
    r = requests.post(f"{url}/v3.1/send", json={"Messages": [msg]}, headers=auth, timeout=10)
    assert r.status_code == 200, r.text


def test_mailjet_send_is_accepted_and_in_the_ledger(esp):
    """Mailjet v3.1 via mailjet-rest: 200 Messages[0].Status success; the ledger has the message under its
    CustomID, with the MessageID answered as esp_id and the Basic-auth API key as key."""
    cid = new_id()
    out = mailjet_send(esp, cid).json()["Messages"][0]
    assert out["Status"] == "success" and out["CustomID"] == cid
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("mailjet", "mj-key", str(out["To"][0]["MessageID"]))


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


def test_mailjet_429_over_plain_http(esp):
    """Over plain HTTP the second send in the window gets Mailjet's global error body with StatusCode
    429 and ErrorIdentifier, and Retry-After; the refusal is in the ledger."""
    esp.control.add_fault(THROTTLE)
    refused = replies(esp, "mailjet", 429)
    assert post(esp, "/v3.1/send", MJ, json={"Messages": [PLAIN]}).status_code < 300
    r = post(esp, "/v3.1/send", MJ, json={"Messages": [PLAIN]})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert r.json()["StatusCode"] == 429 and "ErrorIdentifier" in r.json()
    assert replies(esp, "mailjet", 429) == refused + 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches mailjet-rest as its ApiError, raised from requests' HTTPError
    with that status; nothing is kept."""
    before, answered = kept(esp), replies(esp, "mailjet", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(MailjetError) as err:  # the SDK's base error, raised from requests' HTTPError
        mailjet_send(esp, new_id())
    assert err.value.__cause__.response.status_code == status
    assert kept(esp) == before and replies(esp, "mailjet", status) == answered + 1


def test_mailjet_bad_bodies(esp):
    """Mailjet: broken JSON is the global error mj-0002; a message error is 400 Messages[0].Errors with
    ErrorCode and ErrorRelatedTo; no Basic auth is 401."""
    r = post(esp, "/v3.1/send", MJ, data=b'{"Messages": [')
    assert r.status_code == 400 and r.json()["ErrorCode"] == "mj-0002" and r.json()["StatusCode"] == 400
    msg = {"From": {"Email": "a@b.test"}, "To": [{"Email": "nope"}], "TextPart": "x"}
    r = post(esp, "/v3.1/send", MJ, json={"Messages": [msg]})
    (err,) = r.json()["Messages"][0]["Errors"]
    assert r.status_code == 400 and r.json()["Messages"][0]["Status"] == "error"
    assert (err["ErrorCode"], err["ErrorRelatedTo"], err["StatusCode"]) == ("mj-0013", ["To[0].Email"], 400)
    r = post(
        esp, "/v3.1/send", MJ, json={"Messages": [{**msg, "To": [{"Email": "u@b.test"}], "TextPart": ""}]}
    )
    assert r.json()["Messages"][0]["Errors"][0]["ErrorCode"] == "send-0003"
    r = post(esp, "/v3.1/send", {}, json={"Messages": [msg]})
    assert r.status_code == 401 and r.json()["StatusCode"] == 401


def test_globals_are_merged_into_each_message(tmp_path):
    """``Globals`` (as django-anymail sends: From, Subject, TextPart, Headers, EventPayload there, only To
    in each message): each message is sent with them, its own Headers merged over the global ones
    (key by key), and its events echo the global EventPayload and CustomCampaign and its own CustomID."""
    body = {
        "Globals": {
            "From": {"Email": "app@example.test"},
            "Subject": "s",
            "TextPart": "b",
            "Headers": {CORRELATION_HEADER: "glob-shared", "X-Campaign": "spring"},
            "EventPayload": '{"user_id": "42"}',
            "CustomCampaign": "newsletter",
        },
        "Messages": [
            {"To": [{"Email": "u0@example.test"}], "Headers": {"X-Other": "x"}, "CustomID": "custom-0"},
            {"To": [{"Email": "u1@example.test"}], "Headers": {CORRELATION_HEADER: "glob-own"},
             "CustomID": "custom-1"},
        ],
    }  # fmt: skip
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            r = post(esp, "/v3.1/send", MJ, json=body)
            assert r.status_code == 200, r.text
            wait_until(lambda: len(rx.events()) >= 2)
            # Message 0's Headers merged with the global ones (the global id); message 1's own id wins.
            assert [len(accepted(esp, cid)) for cid in ("glob-shared", "glob-own")] == [1, 1]
        finally:
            esp.stop()
        raws = sorted((e["raw"] for e in rx.events()), key=lambda raw: raw["CustomID"])
    assert [(raw["CustomID"], raw["Payload"], raw["customcampaign"]) for raw in raws] == [
        (f"custom-{i}", '{"user_id": "42"}', "newsletter") for i in range(2)
    ]
