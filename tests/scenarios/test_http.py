"""The HTTP user: ESP-shaped requests the real fake ESP accepts, custom body templates, and a whole
HTTP load through LoadRun (Locust in its own processes)."""

from __future__ import annotations

import json

import pytest

from mailstorm.harness.targets.base import Endpoint
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.scenarios.http_submit import HttpSubmitter
from mailstorm.scenarios.messages import MessageFactory
from mailstorm.scenarios.model import HttpOptions, LoadSpec

TEMPLATE = '{"ref": {{ id|tojson }}, "to": {{ recipients|tojson }}, "subject": {{ subject|tojson }}}'


@pytest.fixture
def factory():
    return MessageFactory(
        LoadSpec(messages=[{"html": True, "recipients": [1, 3]}]), run_id="h", worker=0, seed=1
    )


@pytest.mark.parametrize("api", ["sendgrid", "ses", "postmark", "mailgun"])
def test_esp_api_requests_are_accepted_by_the_fake_esp_with_their_id(esp, factory, api):
    """Each ESP preset sends that API's request shape; the fake ESP accepts it and records the
    correlation id, the Message-ID and the recipients."""
    sub = HttpSubmitter(esp.http_url, HttpOptions(api=api), msgs_per_connection=10, timeout_s=10)
    msgs = [factory.next() for _ in range(3)]
    results = [sub.submit(m) for m in msgs]
    sub.close()
    assert all(r.ok and 200 <= r.code < 300 for r in results), results
    accepted = list(LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]))
    assert [a["id"] for a in accepted] == [m.id for m in msgs]
    assert {a["api"] for a in accepted} == {api}
    assert [a["mid"] for a in accepted] == [m.message_id for m in msgs]


def test_custom_template_and_error_statuses(echo_http, factory):
    """A custom body template renders per message (JSON with the message's fields, plus the correlation
    header); a 429 is reported with its status and phase "http", and the next request goes through."""
    echo_http.statuses[:] = [202, 429]
    opts = HttpOptions(path="/api/send", body_template=TEMPLATE, headers={"Authorization": "Bearer k"})
    sub = HttpSubmitter(echo_http.url, opts, msgs_per_connection=2, timeout_s=5)
    msgs = [factory.next() for _ in range(3)]
    results = [sub.submit(m) for m in msgs]
    sub.close()
    assert [(r.ok, r.code, r.phase) for r in results] == [
        (True, 202, "done"),
        (False, 429, "http"),
        (True, 202, "done"),
    ]
    assert sub.connections == 2
    for m, req in zip(msgs, echo_http.requests, strict=True):
        assert (req["method"], req["path"]) == ("POST", "/api/send")
        assert req["headers"]["X-Mailstorm-Id"] == m.id and req["headers"]["Authorization"] == "Bearer k"
        assert json.loads(req["body"]) == {"ref": m.id, "to": list(m.recipients), "subject": m.subject}


def test_http_load_through_locust_to_the_esp_sendgrid_api(esp, run_load):
    """An ESP-direct HTTP load (SendGrid API, 50/s for 3 s) through Locust: every submission accepted
    and the accepted ids are exactly those in the fake ESP's ledger."""
    spec = {
        "protocol": "http",
        "http": {"api": "sendgrid"},
        "shape": {"kind": "steady", "rate": 50},
        "duration_s": 3,
        "max_connections": 10,
    }
    res = run_load(spec, [Endpoint("http", url=esp.http_url)])
    assert res.rc == 0 and res.dropped_count == 0
    assert len(res.submits) == 150 and all(r["ok"] and r["code"] == 202 for r in res.submits)
    accepted = list(LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]))
    assert sorted(a["id"] for a in accepted) == sorted(r["id"] for r in res.submits)
