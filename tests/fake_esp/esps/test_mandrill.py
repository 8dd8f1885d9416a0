"""Mailchimp Transactional (Mandrill): the official SDK (mailchimp-transactional) and plain HTTP against
the fake's messages/send, its 429 and 5xx answers, and its 400/401s following the API reference."""

from __future__ import annotations

import mailchimp_transactional
import pytest
import requests
from mailchimp_transactional.api_client import ApiClientError

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import THROTTLE, accepted, kept, new_id, post, replies, reply_fault

ROUTES = [("/api/1.0/messages/send.json", {}), ("/api/1.3/messages/send.json", {})]


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


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP (the key in the body), the correlation id in metadata."""
    msg = {"from_email": "a@example.test", "to": [{"email": "u@example.test"}], "text": "b",
           "metadata": {CORRELATION_HEADER: cid}}  # fmt: skip
    r = requests.post(f"{url}/api/1.0/messages/send.json", json={"key": "k", "message": msg}, timeout=10)
    assert r.status_code == 200, r.text


def test_mandrill_send_is_accepted_and_in_the_ledger(esp):
    """Mandrill via mailchimp-transactional (key in the body): one "sent" entry per recipient whose _id is
    the ledger's esp_id; the id came from metadata."""
    cid = new_id()
    (out,) = mandrill_send(esp, cid)
    assert out["status"] == "sent" and out["email"] == "user@example.test"
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("mandrill", fingerprint("md-key"), out["_id"])


def test_mandrill_429_from_the_throttle(esp):
    """Mandrill: the SDK raises ApiClientError with status 429 and Mandrill's error body."""
    esp.control.add_fault(THROTTLE)
    mandrill_send(esp, new_id())
    with pytest.raises(ApiClientError) as err:
        mandrill_send(esp, new_id())
    assert err.value.status_code == 429
    assert err.value.text["status"] == "error" and err.value.text["name"] == "Too_Many_Requests"


def test_mandrill_429_over_plain_http(esp):
    """Over plain HTTP the second send in the window gets {status: error, name} and Retry-After; the
    refusal is in the ledger."""
    esp.control.add_fault(THROTTLE)
    refused = replies(esp, "mandrill", 429)
    body = {"key": "k", "message": {"from_email": "a@b.test", "to": [{"email": "u@b.test"}], "text": "x"}}
    assert post(esp, "/api/1.0/messages/send.json", {}, json=body).status_code < 300
    r = post(esp, "/api/1.0/messages/send.json", {}, json=body)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert r.json()["status"] == "error" and r.json()["name"]
    assert replies(esp, "mandrill", 429) == refused + 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches the SDK as ApiClientError with that status; nothing is kept."""
    before, answered = kept(esp), replies(esp, "mandrill", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(ApiClientError) as err:
        mandrill_send(esp, new_id())
    assert err.value.status_code == status
    assert kept(esp) == before and replies(esp, "mandrill", status) == answered + 1


def test_mandrill_bad_bodies(esp):
    """Mandrill: 400 {status: error, code: -2, name: ValidationError}; a missing key is 401 Invalid_Key."""
    r = post(esp, "/api/1.0/messages/send.json", {}, data=b'{"key": ')
    assert r.status_code == 400 and (r.json()["status"], r.json()["name"]) == ("error", "ValidationError")
    r = post(esp, "/api/1.0/messages/send.json", {}, json={"key": "k", "message": {"from_email": "a@b.test"}})
    assert r.status_code == 400 and r.json()["code"] == -2 and "to" in r.json()["message"]
    r = post(esp, "/api/1.0/messages/send.json", {}, json={"message": {}})
    assert r.status_code == 401 and r.json()["name"] == "Invalid_Key"
