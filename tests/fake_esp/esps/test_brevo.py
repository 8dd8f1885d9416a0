"""Brevo: the official SDK (brevo-python) and plain HTTP against the fake's transactional email API, its
429 (with the x-sib-ratelimit-* headers) and 5xx answers, and its 400s following the API reference."""

from __future__ import annotations

import httpx
import pytest
import requests
from brevo import Brevo
from brevo.core.api_error import ApiError as BrevoApiError

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER
from tests.fake_esp.http_support import THROTTLE, accepted, kept, new_id, post, replies, reply_fault

BREVO = {"api-key": "xkeysib-test"}
ROUTES = [("/v3/smtp/email", BREVO)]
RATE_HEADERS = {"x-sib-ratelimit-limit", "x-sib-ratelimit-remaining", "x-sib-ratelimit-reset"}


def brevo_send(esp: EspProcess, cid: str, key: str = "xkeysib-test"):
    with httpx.Client(timeout=10) as http:  # the SDK's transport, closed after the call
        client = Brevo(api_key=key, base_url=esp.http_url + "/v3", max_retries=0, httpx_client=http)
        return client.transactional_emails.send_transac_email(
            sender={"email": "app@example.test", "name": "App"},
            to=[{"email": "user@example.test"}],
            subject="s",
            text_content="b",
            headers={CORRELATION_HEADER: cid},
        )


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id in the custom headers."""
    body = {"sender": {"email": "a@example.test"}, "to": [{"email": "u@example.test"}], "subject": "s",
            "textContent": "b", "headers": {CORRELATION_HEADER: cid}}  # fmt: skip
    r = requests.post(f"{url}/v3/smtp/email", json=body, headers={"api-key": "k"}, timeout=10)
    assert r.status_code == 201, r.text


def test_brevo_send_is_accepted_and_in_the_ledger(esp):
    """Brevo via brevo-python: 201 with messageId; the id came from the custom headers."""
    cid = new_id()
    out = brevo_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert out.message_id == rec["esp_id"] and rec["api"] == "brevo"
    assert rec["key"] == fingerprint("xkeysib-test")


def test_brevo_429_from_the_throttle_has_the_sib_ratelimit_headers(esp):
    """Brevo: the SDK raises its ApiError with status 429, body {code: too_many_requests, message} and the
    x-sib-ratelimit-limit/remaining/reset headers."""
    esp.control.add_fault(THROTTLE)
    brevo_send(esp, new_id())
    with pytest.raises(BrevoApiError) as err:
        brevo_send(esp, new_id())
    assert err.value.status_code == 429 and err.value.body["code"] == "too_many_requests"
    headers = err.value.headers
    assert headers["x-sib-ratelimit-limit"] == "1" and headers["x-sib-ratelimit-remaining"] == "0"
    assert int(headers["x-sib-ratelimit-reset"]) >= 1


def test_brevo_429_over_plain_http(esp):
    """Over plain HTTP the second send in the window gets {code: too_many_requests}, the x-sib-ratelimit-*
    headers and Retry-After; the refusal is in the ledger."""
    esp.control.add_fault(THROTTLE)
    refused = replies(esp, "brevo", 429)
    body = {
        "sender": {"email": "a@b.test"},
        "to": [{"email": "u@b.test"}],
        "subject": "s",
        "textContent": "x",
    }
    assert post(esp, "/v3/smtp/email", BREVO, json=body).status_code < 300
    r = post(esp, "/v3/smtp/email", BREVO, json=body)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, r.text
    assert r.json()["code"] == "too_many_requests" and {h.lower() for h in r.headers} >= RATE_HEADERS
    assert replies(esp, "brevo", 429) == refused + 1


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches brevo-python as its ApiError with that status; nothing kept."""
    before, answered = kept(esp), replies(esp, "brevo", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(BrevoApiError) as err:
        brevo_send(esp, new_id())
    assert err.value.status_code == status
    assert kept(esp) == before and replies(esp, "brevo", status) == answered + 1


def test_brevo_bad_bodies(esp):
    """Brevo: 400 {code, message} (bad_request / missing_parameter / invalid_parameter); no api-key 401."""
    r = post(esp, "/v3/smtp/email", BREVO, data=b"{nope")
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    body = {"sender": {"email": "a@b.test"}, "subject": "s", "htmlContent": "<p>x</p>"}
    r = post(esp, "/v3/smtp/email", BREVO, json=body)
    assert r.status_code == 400 and r.json() == {"code": "missing_parameter", "message": "to is missing"}
    r = post(esp, "/v3/smtp/email", BREVO, json={**body, "to": [{"email": "bad"}]})
    assert r.status_code == 400 and r.json()["code"] == "invalid_parameter"
    r = post(esp, "/v3/smtp/email", {}, json=body)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
