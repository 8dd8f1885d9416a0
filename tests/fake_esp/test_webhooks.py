"""Event webhooks: each accepted message's events reach a receiver once, in that ESP's format; the
webhook faults (duplicate, drop) and a failing URL show in the ledger, event by event."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import smtplib
import threading
import time
import uuid
from collections import Counter

import orjson
import pytest
import requests
import yaml
from aiohttp import web

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.webhooks import read_events
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port

SIGNING_KEY = "test-signing-key"


class Receiver:
    """A small aiohttp webhook receiver on a free loopback port, in its own thread and event loop.

    The first ``fail_first`` posts get ``fail_status`` (the URL "down"); the rest are kept and get 200.
    """

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.attempts = 0
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.attempts += 1
            if self.attempts <= self.fail_first:
                return web.Response(status=self.fail_status)
            self.posts.append((dict(request.headers), body))
        return web.Response(status=200)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def events(self) -> list[dict]:
        """Every event received, decoded by its ESP format (told apart by headers and shape)."""
        out = []
        with self._lock:
            posts = list(self.posts)
        for headers, body in posts:
            data = orjson.loads(body)
            if "x-amz-sns-message-type" in {k.lower() for k in headers}:
                fmt = "ses"
            elif isinstance(data, list):
                fmt = "sendgrid"
            elif "event-data" in data:
                fmt = "mailgun"
            else:
                fmt = "postmark"
            out += [{**ev, "format": fmt, "raw": data} for ev in read_events(fmt, body, CORRELATION_HEADER)]
        return out


def wait_until(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)  # polling interval of a real condition


def start_esp(tmp_path, url: str, **webhooks) -> EspProcess:
    profile = webhooks.pop("profile", None)
    cfg = tmp_path / "webhooks.yaml"
    cfg.write_text(yaml.safe_dump({"url": url, "signing_key": SIGNING_KEY, "seed": 5, **webhooks}))
    return EspProcess(
        tmp_path / "ledger",
        http_port=free_port(),
        profile=profile,
        extra_args=["--webhooks", str(cfg)],
        log_path=tmp_path / "esp.log",
    ).start()


def webhook_records(esp: EspProcess) -> list[dict]:
    return LedgerReader(esp.ledger_dir).merged([Kind.ESP_WEBHOOK])


SES_AUTH = "AWS4-HMAC-SHA256 Credential=AKIDWH/20260101/us-east-1/ses/aws4_request, SignedHeaders=host"


def send(esp: EspProcess, api: str, cid: str) -> None:
    """One message through ``api`` with correlation id ``cid``."""
    url, hdr = esp.http_url, CORRELATION_HEADER
    if api == "sendgrid":
        body = {
            "personalizations": [{"to": [{"email": "u@example.test"}], "custom_args": {hdr: cid}}],
            "from": {"email": "a@example.test"},
            "subject": "s",
            "content": [{"type": "text/plain", "value": "b"}],
        }
        r = requests.post(f"{url}/v3/mail/send", json=body, headers={"Authorization": "Bearer k"}, timeout=10)
    elif api == "ses":
        body = {
            "FromEmailAddress": "a@example.test",
            "Destination": {"ToAddresses": ["u@example.test"]},
            "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
            "EmailTags": [{"Name": "mailstorm_id", "Value": cid}],
        }
        r = requests.post(f"{url}/v2/email/outbound-emails", json=body, headers={"Authorization": SES_AUTH})
    elif api == "mailgun":
        auth = {"Authorization": "Basic " + base64.b64encode(b"api:k").decode()}
        data = {"from": "a@example.test", "to": "u@example.test", "text": "b", f"v:{hdr}": cid}
        r = requests.post(f"{url}/v3/mg.example.test/messages", data=data, headers=auth, timeout=10)
    else:
        body = {"From": "a@example.test", "To": "u@example.test", "TextBody": "b", "Metadata": {hdr: cid}}
        r = requests.post(f"{url}/email", json=body, headers={"X-Postmark-Server-Token": "k"}, timeout=10)
    assert r.status_code in (200, 202), r.text


@pytest.mark.parametrize("api", ["sendgrid", "ses", "mailgun", "postmark"])
def test_each_accepted_message_is_delivered_once_in_the_esps_format(tmp_path, api):
    """Five messages through one API: the receiver gets exactly one delivered event per message, in that
    ESP's format, carrying the correlation id and the ESP's message id from the ledger."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            ids = [f"wh-{api}-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
            for cid in ids:
                send(esp, api, cid)
            wait_until(lambda: len(rx.events()) >= len(ids))
            kept = {r["id"]: r["esp_id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
        finally:
            esp.stop()
        events = rx.events()
    assert sorted(e["id"] for e in events) == sorted(ids)
    assert {(e["format"], e["event"]) for e in events} == {(api, "delivered")}
    assert all(e["esp_id"] == kept[e["id"]] for e in events)
    if api == "mailgun":  # signed as Mailgun signs: HMAC-SHA256(key, timestamp + token)
        for e in events:
            sig = e["raw"]["signature"]
            mac = hmac.new(SIGNING_KEY.encode(), (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256)
            assert mac.hexdigest() == sig["signature"]
    if api == "ses":  # an SNS notification whose Message is the SES event JSON
        assert all(e["raw"]["Type"] == "Notification" for e in events)
    assert all(r["ok"] and r["attempt"] == 1 for r in webhook_records(esp))


def test_smtp_acceptances_post_in_the_profiles_format(tmp_path):
    """With --profile sendgrid, a message accepted over SMTP is posted as a SendGrid Event Webhook array."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, profile="sendgrid")
        try:
            with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
                s.sendmail("a@example.test", ["u@example.test"], f"{CORRELATION_HEADER}: smtp-1\r\n\r\nb\r\n")
            wait_until(lambda: len(rx.events()) >= 1)
        finally:
            esp.stop()
        (event,) = rx.events()
    assert (event["format"], event["event"], event["id"]) == ("sendgrid", "delivered", "smtp-1")


def test_duplicate_and_drop_faults_are_told_apart_in_the_ledger(tmp_path):
    """With duplicate and drop faults on, the receiver's count per event equals what the ledger says:
    2 for an event recorded as duplicated, 0 for one recorded as dropped, 1 otherwise."""
    n = 40
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, faults={"duplicate": 0.25, "drop": 0.25})
        try:
            for i in range(n):
                send(esp, "postmark", f"fault-{i}")
            recs = lambda: [r for r in webhook_records(esp) if r["final"]]  # noqa: E731
            wait_until(lambda: len(recs()) >= n + sum(r["fault"] == "duplicate" for r in recs()))
            wait_until(lambda: len(rx.events()) >= sum(r["ok"] for r in recs()))
        finally:
            esp.stop()
        got = Counter(e["id"] for e in rx.events())
    ledger = webhook_records(esp)
    dropped = {r["id"] for r in ledger if r["fault"] == "drop"}
    doubled = {r["id"] for r in ledger if r["fault"] == "duplicate"}
    assert dropped and doubled, "with 40 events at p=0.25 both faults fire (seeded)"
    assert all(r["status"] is None and r["attempt"] == 0 for r in ledger if r["fault"] == "drop")
    for i in range(n):
        cid = f"fault-{i}"
        expected = 0 if cid in dropped else (2 if cid in doubled else 1)
        assert got[cid] == expected, cid
        assert sum(1 for r in ledger if r["id"] == cid and r["ok"]) == expected


def test_a_down_url_is_retried_on_the_esps_schedule(tmp_path):
    """Postmark's retry schedule (1 min, 5 min, 10 min...) scaled by 0.001: the receiver fails three
    times, the fourth attempt lands; the ledger has attempts 1-4 with the statuses the URL gave."""
    with Receiver(fail_first=3) as rx:
        esp = start_esp(tmp_path, rx.url, retry_time_scale=0.001)
        try:
            send(esp, "postmark", "retry-1")
            wait_until(lambda: len(rx.events()) >= 1)
        finally:
            esp.stop()
    recs = [r for r in webhook_records(esp) if r["id"] == "retry-1"]
    assert [(r["attempt"], r["status"], r["final"]) for r in recs] == [
        (1, 503, False), (2, 503, False), (3, 503, False), (4, 200, True),
    ]  # fmt: skip
    gaps = [(b["t"] - a["t"]) / 1e9 for a, b in itertools.pairwise(recs)]
    assert gaps[1] > gaps[0] * 2  # 60 ms then 300 ms: the schedule's shape, not a fixed interval


def test_mailgun_gives_up_as_mailgun_does(tmp_path):
    """Mailgun does not retry a 406, nor ever a delivered event: one attempt each, final, not ok."""
    with Receiver(fail_first=2, fail_status=406) as rx:
        esp = start_esp(tmp_path, rx.url, retry_time_scale=0.001, events={"open": 1.0})
        try:
            send(esp, "mailgun", "mg-406")
            wait_until(lambda: sum(r["final"] for r in webhook_records(esp)) >= 2)
        finally:
            esp.stop()
    recs = webhook_records(esp)
    assert sorted((r["event"], r["attempt"], r["status"], r["ok"]) for r in recs) == [
        ("delivered", 1, 406, False), ("open", 1, 406, False),
    ]  # fmt: skip


def test_reorder_and_delay_faults(tmp_path):
    """Reorder: an event marked reordered reaches the receiver after one accepted later than it; delay:
    no event is posted sooner than delay_ms after its message was accepted."""
    n = 20
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, faults={"reorder": 0.3, "delay_ms": 150})
        try:
            for i in range(n):
                send(esp, "postmark", f"ro-{i:02d}")
            wait_until(lambda: len(rx.events()) >= n)
        finally:
            esp.stop()
        order = [e["id"] for e in rx.events()]
    ledger = webhook_records(esp)
    reordered = {r["id"] for r in ledger if r["fault"] == "reorder"}
    assert reordered, "with 20 events at p=0.3 some are reordered (seeded)"
    for cid in reordered:
        later = [f"ro-{i:02d}" for i in range(int(cid[3:]) + 1, n)]
        assert any(
            order.index(other) < order.index(cid) for other in later if other not in reordered
        ) or not [o for o in later if o not in reordered], cid
    kept = {r["id"]: r["t"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
    # The loop's timers may fire a fraction of a millisecond early (uvloop's clock has 1 ms steps).
    early = [r["id"] for r in ledger if (r["t"] - kept[r["id"]]) / 1e6 < 150 - 2]
    assert not early, early
