"""Event webhooks of Mailjet, Brevo, Elastic Email, SendPulse and Mandrill: each accepted message's
delivered event reaches a receiver once, in that service's format, carrying the correlation id (where
that service echoes it) and the ESP message id from the ledger; and a bounce mix comes back as each
service's own bounce event."""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from urllib.parse import parse_qs

import orjson
import requests

from mailstorm.fake_esp.webhooks import read_events
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from tests.fake_esp.test_webhooks import Receiver, start_esp, wait_until

MORE = ("mailjet", "brevo", "elasticemail", "sendpulse", "mandrill")


def send(url: str, api: str, cid: str) -> None:
    """One message through ``api`` (plain HTTP, as each reference shows) with correlation id ``cid``."""
    hdr = CORRELATION_HEADER
    if api == "mailjet":
        auth = {"Authorization": "Basic " + base64.b64encode(b"k:s").decode()}
        msg = {"From": {"Email": "a@example.test"}, "To": [{"Email": "u@example.test"}], "TextPart": "b",
               "CustomID": cid}  # fmt: skip
        r = requests.post(f"{url}/v3.1/send", json={"Messages": [msg]}, headers=auth, timeout=10)
    elif api == "brevo":
        body = {"sender": {"email": "a@example.test"}, "to": [{"email": "u@example.test"}], "subject": "s",
                "textContent": "b", "headers": {hdr: cid}}  # fmt: skip
        r = requests.post(f"{url}/v3/smtp/email", json=body, headers={"api-key": "k"}, timeout=10)
    elif api == "elasticemail":
        content = {
            "From": "a@example.test",
            "Postback": cid,
            "Body": [{"ContentType": "PlainText", "Content": "b"}],
        }
        body = {"Recipients": {"To": ["u@example.test"]}, "Content": content}
        r = requests.post(f"{url}/v4/emails/transactional", json=body, headers={"X-ElasticEmail-ApiKey": "k"})
    elif api == "sendpulse":
        creds = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
        token = requests.post(f"{url}/oauth/access_token", json=creds, timeout=10).json()["access_token"]
        email = {"text": "b", "subject": "s", "from": {"email": "a@example.test"},
                 "to": [{"email": "u@example.test"}], "headers": {hdr: cid}}  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        r = requests.post(f"{url}/smtp/emails", json={"email": email}, headers=auth, timeout=10)
    else:
        msg = {"from_email": "a@example.test", "to": [{"email": "u@example.test"}], "text": "b",
               "metadata": {hdr: cid}}  # fmt: skip
        r = requests.post(f"{url}/api/1.0/messages/send.json", json={"key": "k", "message": msg}, timeout=10)
    assert r.status_code in (200, 201), r.text


def format_of(body: bytes) -> str:
    """Which service's webhook a body is, told apart by its shape."""
    if body.startswith((b"{", b"[")):
        data = orjson.loads(body)
        if isinstance(data, list):
            return "sendpulse"
        return "mailjet" if "Message_GUID" in data else "brevo"
    return "mandrill" if "mandrill_events" in parse_qs(body.decode()) else "elasticemail"


def received(rx: Receiver) -> list[dict]:
    out = []
    for _, body in list(rx.posts):
        fmt = format_of(body)
        out += [{**ev, "format": fmt} for ev in read_events(fmt, body, CORRELATION_HEADER)]
    return out


def test_each_accepted_message_is_delivered_once_in_each_services_format(tmp_path):
    """Three messages through each of the five APIs: one delivered event per message, in the format of
    the API it came in by, with its correlation id and its ledger esp_id."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            sent = {api: [f"wh-{api}-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)] for api in MORE}
            for api, ids in sent.items():
                for cid in ids:
                    send(esp.http_url, api, cid)
            wait_until(lambda: len(received(rx)) >= 15)
            kept = {r["id"]: r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
        finally:
            esp.stop()
        events = received(rx)
    assert len(events) == 15 and all(e["event"] == "delivered" for e in events)
    for api, ids in sent.items():
        mine = [e for e in events if e["format"] == api]
        assert sorted(e["id"] for e in mine) == sorted(ids), api
        assert all(e["esp_id"] == kept[e["id"]]["esp_id"] and kept[e["id"]]["api"] == api for e in mine)


def test_bounces_come_back_as_each_services_bounce_event(tmp_path):
    """With every recipient bouncing (events.bounce = 1), each service posts its own bounce record
    (Mailjet bounce hard_bounce, Brevo hard_bounce, Elastic Email Error, SendPulse undelivered, Mandrill
    hard_bounce), which reads back as a canonical bounce."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, events={"bounce": 1.0})
        try:
            for api in MORE:
                send(esp.http_url, api, f"b-{api}")
            wait_until(lambda: len(received(rx)) >= len(MORE))
        finally:
            esp.stop()
        events = received(rx)
        raw = {format_of(b): b for _, b in rx.posts}
    assert Counter((e["format"], e["event"]) for e in events) == {(api, "bounce"): 1 for api in MORE}
    assert orjson.loads(raw["mailjet"])["hard_bounce"] is True
    assert orjson.loads(raw["brevo"])["event"] == "hard_bounce"
    assert parse_qs(raw["elasticemail"].decode())["status"] == ["Error"]
    assert orjson.loads(raw["sendpulse"])[0]["event"] == "undelivered"
    (md,) = orjson.loads(parse_qs(raw["mandrill"].decode())["mandrill_events"][0])
    assert md["event"] == "hard_bounce" and md["msg"]["metadata"] == {CORRELATION_HEADER: "b-mandrill"}
