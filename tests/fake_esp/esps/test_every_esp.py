"""Every ESP at once: one fake ESP serving every HTTP API answers arbitrary bodies with 2xx/4xx and
never a 5xx, and posts each accepted message's events once, in the format of the API it came in by.

Each ESP's own test module (``test_<name>.py``, one per ESP home) gives its routes (``ROUTES``) and a
plain-HTTP sender (``send_plain``); this module runs them together.
"""

from __future__ import annotations

import importlib
import uuid
from collections import Counter
from urllib.parse import parse_qs

import orjson
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.http.api import ESP_APIS
from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from tests.fake_esp.http_support import Receiver, post, start_esp, wait_until

ESPS = ESP_APIS.names()
POSTING = WEBHOOK_FORMATS.names()  # the APIs whose accepted messages come back as webhooks
MODULES = {name: importlib.import_module(f"tests.fake_esp.esps.test_{name}") for name in ESPS}
ROUTES = [route for module in MODULES.values() for route in module.ROUTES]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
    max_leaves=12,
).map(lambda v: requests.models.complexjson.dumps(v).encode())


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(st.binary(max_size=300), JSONISH),
    ctype=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=b",
            "application/x-www-form-urlencoded",
            "text/plain",
        ]
    ),
)
def test_arbitrary_bodies_and_content_types_never_get_a_5xx(esp, route, body, ctype):
    """Whatever the body and content type, every API answers a 2xx or a 4xx, never a 5xx."""
    path, headers = route
    r = post(esp, path, {**headers, "Content-Type": ctype}, data=body)
    assert r.status_code < 500, (path, body, r.status_code, r.text)


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(
        st.binary(max_size=300),
        JSONISH,
        st.fixed_dictionaries(
            {
                "Messages": st.lists(
                    st.dictionaries(
                        st.sampled_from(["From", "To", "TextPart", "Headers"]),
                        st.none() | st.text(max_size=5) | st.lists(st.text(max_size=5)),
                    )
                )
            }
        ).map(lambda v: requests.models.complexjson.dumps(v).encode()),
    ),
)
def test_arbitrary_json_bodies_never_get_a_5xx(esp, route, body):
    """Whatever the JSON body (or bytes sent as JSON), every API answers a 2xx or a 4xx, never a 5xx."""
    path, headers = route
    r = post(esp, path, {**headers, "Content-Type": "application/json"}, data=body)
    assert r.status_code < 500, (path, body, r.status_code, r.text)


def test_each_accepted_message_is_delivered_once_in_each_services_format(tmp_path):
    """Three messages through each API of one fake ESP: one delivered event per message, in
    the format of the API it came in by, with its correlation id and its ledger esp_id."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            sent = {api: [f"wh-{api}-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)] for api in POSTING}
            for api, ids in sent.items():
                for cid in ids:
                    MODULES[api].send_plain(esp.http_url, cid)
            wait_until(lambda: len(rx.events()) >= 3 * len(POSTING))
            kept = {r["id"]: r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
        finally:
            esp.stop()
        events = rx.events()
    assert len(events) == 3 * len(POSTING) and all(e["event"] == "delivered" for e in events)
    for api, ids in sent.items():
        mine = [e for e in events if e["format"] == api]
        assert sorted(e["id"] for e in mine) == sorted(ids), api
        assert all(e["esp_id"] == kept[e["id"]]["esp_id"] and kept[e["id"]]["api"] == api for e in mine)


def test_bounces_come_back_as_each_services_bounce_event(tmp_path):
    """With every recipient bouncing (events.bounce = 1), each service posts its own bounce record
    (Mailjet bounce hard_bounce, Brevo hard_bounce, Elastic Email Error, SendPulse undelivered, Mandrill
    hard_bounce, ...), which reads back as a canonical bounce."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, events={"bounce": 1.0})
        try:
            for api in POSTING:
                MODULES[api].send_plain(esp.http_url, f"b-{api}")
            wait_until(lambda: len(rx.events()) >= len(POSTING))
        finally:
            esp.stop()
        events = rx.events()
    assert Counter((e["format"], e["event"]) for e in events) == {(api, "bounce"): 1 for api in POSTING}
    raw = {e["format"]: e["raw"] for e in events}
    assert raw["mailjet"]["hard_bounce"] is True
    assert raw["brevo"]["event"] == "hard_bounce"
    assert parse_qs(raw["elasticemail"].decode())["status"] == ["Error"]
    assert raw["sendpulse"][0]["event"] == "undelivered"
    (md,) = orjson.loads(parse_qs(raw["mandrill"].decode())["mandrill_events"][0])
    assert md["event"] == "hard_bounce" and md["msg"]["metadata"] == {CORRELATION_HEADER: "b-mandrill"}
