"""Klaviyo Create Event, a rate-limit fake: the official SDK (klaviyo-api) and plain HTTP against the
fake's /api/events, the profile's burst + steady limits (a 429 ``throttled`` with Retry-After in the
SDK's ApiException), 5xx answers and JSON:API 400/401s."""

from __future__ import annotations

import json

import pytest
import requests
from klaviyo_api import KlaviyoAPI
from openapi_client.exceptions import ApiException

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.ledger import CORRELATION_HEADER
from mailstorm.ports import free_port
from tests.fake_esp.http_support import THROTTLE, accepted, kept, new_id, post, replies, reply_fault

KL = {
    "Authorization": "Klaviyo-API-Key pk_test",
    "revision": "2024-10-15",
    "Content-Type": "application/json",
}
ROUTES = [("/api/events", KL)]


def event(cid: str, email: str = "u@example.test") -> dict:
    return {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {CORRELATION_HEADER: cid},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Password reset"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
            },
        }
    }


def klaviyo_send(esp: EspProcess, cid: str, key: str = "pk_test") -> None:
    # max_retries=0: the SDK retries 429 and 503 itself by default; the tests look at one answer.
    client = KlaviyoAPI(key, max_retries=0, test_host=esp.http_url)
    client.Events.create_event(event(cid))


def send_plain(url: str, cid: str) -> None:
    r = requests.post(url + "/api/events", json=event(cid), headers=KL, timeout=10)
    assert r.status_code == 202, r.text


def test_klaviyo_event_is_accepted_and_in_the_ledger(esp):
    """The SDK's create_event: 202; the event is an esp.accepted for the profile's email."""
    cid = new_id()
    klaviyo_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert rec["api"] == "klaviyo" and rec["rcpts"] == 1


def test_klaviyo_429_is_the_sdks_api_exception(esp):
    """Throttled: 429 {"errors": [{"code": "throttled", "detail": "... Expected available in N seconds."}]}
    with Retry-After, raised by the SDK as its ApiException."""
    esp.control.add_fault(THROTTLE)
    klaviyo_send(esp, new_id())
    with pytest.raises(ApiException) as err:
        klaviyo_send(esp, new_id())
    assert err.value.status == 429 and int(err.value.headers["Retry-After"]) >= 1
    (e,) = json.loads(err.value.body)["errors"]
    assert e["code"] == "throttled" and "Expected available in" in e["detail"]


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    before, answered = kept(esp), replies(esp, "klaviyo", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(ApiException) as err:
        klaviyo_send(esp, new_id())
    assert err.value.status == status
    assert kept(esp) == before and replies(esp, "klaviyo", status) == answered + 1


def test_klaviyo_bad_requests_get_json_api_errors(esp):
    """JSON:API errors: 400 invalid with a source pointer, 401 not_authenticated."""
    r = post(esp, "/api/events", KL, data=b'{"data": ')
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "invalid"
    broken = event("x")
    del broken["data"]["attributes"]["metric"]
    r = post(esp, "/api/events", KL, json=broken)
    assert r.status_code == 400 and r.json()["errors"][0]["source"]["pointer"] == "/data/attributes/metric"
    r = post(esp, "/api/events", {"Content-Type": "application/json"}, json=event("x"))
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "not_authenticated"


def test_the_klaviyo_profile_enforces_burst_then_steady(tmp_path):
    """--profile klaviyo: the burst (350) passes at once, then 429 throttled with Retry-After."""
    limits = load_profile("klaviyo").limits
    with EspProcess(tmp_path / "ledger", http_port=free_port(), profile="klaviyo", seed=1) as esp:
        ok = 0
        with requests.Session() as s:
            for i in range(1500):  # bounded: the burst is 350 plus 58/s of refill
                r = s.post(esp.http_url + "/api/events", json=event(f"kl-{i}"), headers=KL, timeout=10)
                if r.status_code == 429:
                    break
                ok += 1
        assert (
            r.status_code == 429 and r.json()["errors"][0]["code"] == "throttled" and r.headers["Retry-After"]
        )
        assert limits.burst <= ok < limits.burst + 10 * limits.rate, ok
        assert kept(esp) == ok
