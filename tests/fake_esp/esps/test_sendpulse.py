"""SendPulse: the official SDK (pysendpulse, OAuth client credentials) and plain HTTP against the fake's
SMTP service API, its 429 and 5xx answers, and its OAuth and send errors following the API reference."""

from __future__ import annotations

import uuid

import pytest
import requests
from pysendpulse.pysendpulse import PySendPulse

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import THROTTLE, accepted, kept, new_id, post, replies, reply_fault

ROUTES = [("/oauth/access_token", {}), ("/smtp/emails", {"Authorization": "Bearer c3AtY2xpZW50.x"})]


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


def sendpulse_headers(esp: EspProcess, client: str = "sp-client") -> dict[str, str]:
    """An OAuth token from the fake, as SendPulse's reference describes (client credentials)."""
    r = post(
        esp,
        "/oauth/access_token",
        {},
        json={"grant_type": "client_credentials", "client_id": client, "client_secret": "s"},
    )
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP (token first), the correlation id in the headers."""
    creds = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    token = requests.post(f"{url}/oauth/access_token", json=creds, timeout=10).json()["access_token"]
    email = {"text": "b", "subject": "s", "from": {"email": "a@example.test"},
             "to": [{"email": "u@example.test"}], "headers": {CORRELATION_HEADER: cid}}  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    r = requests.post(f"{url}/smtp/emails", json={"email": email}, headers=auth, timeout=10)
    assert r.status_code == 200, r.text


def test_sendpulse_send_is_accepted_and_in_the_ledger(esp, tmp_path):
    """SendPulse via pysendpulse: the SDK gets an OAuth token, then /smtp/emails answers {result: true, id};
    the ledger keys the message by the OAuth client id."""
    cid = new_id()
    out = sendpulse_send(sendpulse_client(esp, tmp_path), cid)
    assert out["result"] is True
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("sendpulse", "sp-client", out["id"])


def test_sendpulse_429_from_the_throttle(esp, tmp_path):
    """SendPulse: pysendpulse reports errors as a result (it does not raise): {"data": {is_error, http_code:
    429}} — the SDK drops the body, whose shape the plain-HTTP test below checks."""
    client = sendpulse_client(esp, tmp_path)  # the token request comes before the throttle
    esp.control.add_fault(THROTTLE)
    assert sendpulse_send(client, new_id())["result"] is True
    out = sendpulse_send(client, new_id())
    assert out == {"data": {"is_error": True, "http_code": 429}}


def test_sendpulse_429_over_plain_http(esp):
    """Over plain HTTP a throttled send gets {error_code: 429} and Retry-After (the token request took the
    key's one token, so the first send is already throttled); the refusal is in the ledger."""
    esp.control.add_fault(THROTTLE)
    refused = replies(esp, "sendpulse", 429)
    sp = sendpulse_headers(esp, "sp-429")
    email = {"text": "x", "subject": "s", "from": {"email": "a@b.test"}, "to": [{"email": "u@b.test"}]}
    r = post(esp, "/smtp/emails", sp, json={"email": email})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert r.json()["error_code"] == 429
    assert replies(esp, "sendpulse", 429) == refused + 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status, tmp_path):
    """A reply fault on phase http reaches pysendpulse as an error result with that http_code; nothing
    is kept."""
    client = sendpulse_client(esp, tmp_path)  # the token request comes before the fault
    before, answered = kept(esp), replies(esp, "sendpulse", status)
    esp.control.add_fault(reply_fault(status))
    assert sendpulse_send(client, new_id())["data"]["http_code"] == status
    assert kept(esp) == before and replies(esp, "sendpulse", status) == answered + 1


def test_sendpulse_bad_bodies_and_token(esp):
    """SendPulse: a bad token request is an OAuth error (400/401); a send without a token 401; a bad email
    400 {error_code, message}."""
    r = post(esp, "/oauth/access_token", {}, json={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = post(esp, "/oauth/access_token", {}, json={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = post(esp, "/smtp/emails", {}, json={"email": {}})
    assert r.status_code == 401 and r.json()["error_code"] == 401
    auth = sendpulse_headers(esp)
    r = post(esp, "/smtp/emails", auth, data=b"{")
    assert r.status_code == 400 and r.json()["error_code"] == 400
    r = post(esp, "/smtp/emails", auth, json={"email": {"text": "x", "subject": "s", "to": []}})
    assert r.status_code == 400 and "from" in r.json()["message"]
