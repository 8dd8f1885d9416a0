"""HubSpot single-send, a rate-limit fake: the official SDK (hubspot-api-client) and plain HTTP against
the fake's /marketing/v3/transactional/single-email/send, the profile's 10-second window (a 429 with
policyName TEN_SECONDLY_ROLLING in the SDK's ApiException), 5xx answers and 400/401s."""

from __future__ import annotations

import json

import pytest
import requests
from hubspot import HubSpot
from hubspot.marketing.transactional import ApiException, PublicSingleSendEmail, PublicSingleSendRequestEgg

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.ledger import CORRELATION_HEADER
from mailstorm.ports import free_port
from tests.fake_esp.http_support import THROTTLE, accepted, kept, new_id, post, replies, reply_fault

PATH = "/marketing/v3/transactional/single-email/send"
HS = {"Authorization": "Bearer hs-token", "Content-Type": "application/json"}
ROUTES = [(PATH, HS)]


def hubspot_send(esp: EspProcess, cid: str, key: str = "hs-token"):
    # The generated client trusts certifi unless told: over https it is given the ESP's CA file.
    tls = {"ssl_ca_cert": str(esp.ca_path)} if esp.http_url.startswith("https://") else {}
    client = HubSpot(access_token=key, host=esp.http_url, **tls)
    egg = PublicSingleSendRequestEgg(
        email_id=4242, message=PublicSingleSendEmail(to="user@example.test", send_id=cid)
    )
    return client.marketing.transactional.single_send_api.send_email(public_single_send_request_egg=egg)


def body(cid: str) -> dict:
    return {
        "emailId": 4242,
        "message": {"to": "u@example.test"},
        "customProperties": {CORRELATION_HEADER: cid},
    }


def send_plain(url: str, cid: str) -> None:
    """One single-send over plain HTTP, the correlation id in customProperties."""
    r = requests.post(url + PATH, json=body(cid), headers={"Authorization": "Bearer k"}, timeout=10)
    assert r.status_code == 200, r.text


def test_hubspot_send_is_accepted_and_in_the_ledger(esp):
    """The SDK's send: status PENDING and a statusId, the ledger's esp_id; sendId is the correlation id."""
    cid = new_id()
    out = hubspot_send(esp, cid)
    assert out.status == "PENDING"
    (rec,) = accepted(esp, cid)
    assert rec["esp_id"] == out.status_id and rec["api"] == "hubspot"


def test_hubspot_429_is_the_sdks_api_exception(esp):
    """Throttled: 429 {"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"} with
    X-HubSpot-RateLimit-* and Retry-After, raised by the SDK as its ApiException."""
    esp.control.add_fault(THROTTLE)
    hubspot_send(esp, new_id())
    with pytest.raises(ApiException) as err:
        hubspot_send(esp, new_id())
    assert err.value.status == 429
    assert json.loads(err.value.body)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert err.value.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


def test_a_daily_throttle_gets_hubspots_daily_policy(esp):
    """A throttle fault whose bucket refills over a day (the daily limit, scaled down to 2 a day) answers
    429 policyName DAILY with X-HubSpot-RateLimit-Daily, not the 10-second window's headers."""
    daily = {"name": "hubspot.daily", "type": "throttle", "phase": "http", "rate": 2 / 86_400, "burst": 2,
             "key": "api_key"}  # fmt: skip
    esp.control.add_fault(daily)
    for _ in range(2):
        hubspot_send(esp, new_id())
    with pytest.raises(ApiException) as err:
        hubspot_send(esp, new_id())
    body = json.loads(err.value.body)
    assert (err.value.status, body["policyName"]) == (429, "DAILY")
    assert body["message"] == "You have reached your daily limit."
    assert err.value.headers["X-HubSpot-RateLimit-Daily"] == "2"
    assert "X-HubSpot-RateLimit-Interval-Milliseconds" not in err.value.headers


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    before, answered = kept(esp), replies(esp, "hubspot", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(ApiException) as err:
        hubspot_send(esp, new_id())
    assert err.value.status == status
    assert kept(esp) == before and replies(esp, "hubspot", status) == answered + 1


def test_hubspot_bad_requests_get_its_error_shape(esp):
    """{"status": "error", "message", "correlationId", "category"}: 400 VALIDATION_ERROR, 401
    INVALID_AUTHENTICATION."""
    r = post(esp, PATH, HS, data=b'{"emailId": ')
    assert r.status_code == 400 and r.json()["category"] == "VALIDATION_ERROR"
    r = post(esp, PATH, HS, json={"message": {"to": "u@example.test"}})
    assert r.status_code == 400 and "emailId" in r.json()["message"]
    r = post(esp, PATH, {"Content-Type": "application/json"}, json=body("x"))
    assert r.status_code == 401 and r.json()["category"] == "INVALID_AUTHENTICATION"


def test_the_hubspot_profile_enforces_its_ten_second_window(tmp_path):
    """--profile hubspot: 190 sends pass at once (the window), then 429 TEN_SECONDLY_ROLLING; a send is
    an esp.accepted like any other."""
    limits = load_profile("hubspot").limits
    with EspProcess(tmp_path / "ledger", http_port=free_port(), profile="hubspot", seed=1) as esp:
        ok = 0
        with requests.Session() as s:
            for i in range(600):  # bounded: the window is 190 plus 19/s of refill
                r = s.post(esp.http_url + PATH, json=body(f"hs-{i}"), headers=HS, timeout=10)
                if r.status_code == 429:
                    break
                ok += 1
        assert r.status_code == 429 and r.json()["policyName"] == "TEN_SECONDLY_ROLLING"
        assert limits.burst <= ok < limits.burst + 4 * limits.rate * 10, ok
        assert kept(esp) == ok
