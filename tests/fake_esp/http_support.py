"""Helpers of the fake ESP's HTTP tests: ledger look-ups, fault specs, and a real webhook receiver.

``Receiver`` is a small aiohttp server on a free loopback port (its own thread and event loop) that keeps
every webhook POST; ``events()`` decodes them in whichever ESP format each one is.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
import requests
import yaml
from aiohttp import web

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.webhooks import read_events
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port

# One token per 20 s per API key: the first send passes, the next in the window is throttled.
THROTTLE = {"name": "t", "type": "throttle", "phase": "http", "rate": 0.05, "burst": 1, "key": "api_key"}
STATUS_TEXT = {500: "Internal Server Error", 503: "Service Unavailable"}
SIGNING_KEY = "test-signing-key"


def new_id(prefix: str = "run") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def accepted(esp: EspProcess, cid: str) -> list[dict]:
    """The esp.accepted records of correlation id ``cid``."""
    return [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r.get("id") == cid]


def kept(esp: EspProcess) -> int:
    """How many messages the ESP has accepted so far."""
    return LedgerReader(esp.ledger_dir).count(Kind.ESP_ACCEPTED)


def replies(esp: EspProcess, api: str, code: int | None) -> int:
    """How many times API ``api`` has answered ``code`` so far (esp.replied records)."""
    recs = LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED])
    return sum(1 for r in recs if r["api"] == api and r["code"] == code)


def reply_fault(status: int) -> dict[str, Any]:
    """A fault answering every HTTP request with ``status`` (500 or 503)."""
    return {"name": "down", "type": "reply", "phase": "http", "reply": f"{status} {STATUS_TEXT[status]}"}


def post(esp: EspProcess, path: str, headers: dict, **kw: Any) -> requests.Response:
    return requests.post(esp.http_url + path, headers=headers, timeout=10, **kw)


def wait_until(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)  # polling interval of a real condition


# -- webhooks --------------------------------------------------------------------------------------


def format_of(headers: dict[str, str], body: bytes) -> str:
    """Which ESP's webhook a POST is, told apart by its headers and shape."""
    lower = {k.lower() for k in headers}
    if "x-amz-sns-message-type" in lower:
        return "ses"
    if "svix-id" in lower:
        return "resend"
    if not body.startswith((b"{", b"[")):
        return "mandrill" if "mandrill_events" in parse_qs(body.decode()) else "elasticemail"
    data = orjson.loads(body)
    if isinstance(data, list):
        if data and "msys" in data[0]:
            return "sparkpost"
        return "sendgrid" if data and "sg_event_id" in data[0] else "sendpulse"
    if "event-data" in data:
        return "mailgun"
    if "uuid" in data and "payload" in data:
        return "postal"
    if "RecordType" in data:
        return "postmark"
    if str(data.get("type", "")).startswith("activity."):
        return "mailersend"
    return "mailjet" if "Message_GUID" in data else "brevo"


class Receiver:
    """A webhook receiver on a free loopback port, in its own thread and event loop.

    The first ``fail_first`` posts get ``fail_status`` (the URL "down"); the rest are kept and get 200,
    or with ``judge`` what it answers for (headers, body): kept when 2xx (a receiver that verifies).
    """

    def __init__(
        self,
        fail_first: int = 0,
        fail_status: int = 503,
        judge: Callable[[dict[str, str], bytes], int] | None = None,
    ) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.judge = judge
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
        status = 200
        if self.judge is not None:  # off the loop: a judge may call back into the ESP (SNS's confirm)
            status = await asyncio.to_thread(self.judge, dict(request.headers), body)
        if 200 <= status < 300:
            with self._lock:
                self.posts.append((dict(request.headers), body))
        return web.Response(status=status)

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
        """Every event received, decoded in its ESP's format, with ``format`` and the ``raw`` body (parsed
        when it is JSON)."""
        out = []
        with self._lock:
            posts = list(self.posts)
        for headers, body in posts:
            fmt = format_of(headers, body)
            raw = body if fmt in ("elasticemail", "mandrill") else orjson.loads(body)  # form-encoded: as is
            out += [{**ev, "format": fmt, "raw": raw} for ev in read_events(fmt, body, CORRELATION_HEADER)]
        return out


def start_esp(tmp_path, url: str, **webhooks: Any) -> EspProcess:
    """A fake ESP with the HTTP APIs posting webhooks to ``url`` (settings: WebhookSpec fields)."""
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


def assert_delivered_once(tmp_path, api: str, send, n: int = 5) -> list[dict]:
    """Send ``n`` messages through ``api`` with ``send(http_url, cid)`` to an ESP posting webhooks to a
    receiver; assert exactly one delivered event per message, in ``api``'s format, carrying its
    correlation id and the ESP message id from the ledger, each posted once; return the events."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            ids = [f"wh-{api}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]
            for cid in ids:
                send(esp.http_url, cid)
            wait_until(lambda: len(rx.events()) >= len(ids))
            esp_ids = {
                r["id"]: r["esp_id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])
            }
        finally:
            esp.stop()
        events = rx.events()
    assert sorted(e["id"] for e in events) == sorted(ids)
    assert {(e["format"], e["event"]) for e in events} == {(api, "delivered")}
    assert all(e["esp_id"] == esp_ids[e["id"]] for e in events)
    assert all(r["ok"] and r["attempt"] == 1 for r in webhook_records(esp))
    return events
