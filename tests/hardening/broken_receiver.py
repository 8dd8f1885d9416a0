"""A known-broken webhook receiver: the analytics truth test's SUT (tests/hardening/test_analytics_truth.py).

It takes the fake ESP's posts of one format on loopback, numbers them in arrival order from 1, and:

- while "busy" (post n with n % ``busy_every`` == 0) answers 200 and counts nothing: its events are lost
  unless a later post of them comes (a duplicate copy, a retry);
- counts every other post's events, redeliveries too (no idempotency: a retried or duplicated event is
  counted again), each count one ``sut.event`` record, as an honest SUT reporting its counts would;
- the first time it sees an event in a post n with n % ``fail_every`` == 1, counts it and then answers 500
  (it crashed after its commit): the ESP retries, and the retry is counted again.

Its truth is what it did, kept as it goes: per event id, how often it counted it and whether it ever saw
it; ``missed()`` and ``double_counted()`` per kind are read from that alone, not from the ESP's ledger.
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from mailstorm.fake_esp.webhooks import read_events
from mailstorm.ledger import CORRELATION_HEADER, LedgerWriter, SutEvent


class BrokenReceiver:
    def __init__(self, ledger_dir: Path, fmt: str, *, busy_every: int = 6, fail_every: int = 4) -> None:
        self.fmt = fmt
        self.busy_every, self.fail_every = busy_every, fail_every
        self.ledger = LedgerWriter(ledger_dir, "sut-broken")
        self.posts = 0
        self.kind: dict[str, str] = {}  # every event id it saw -> its kind
        self.counted: Counter[str] = Counter()  # event id -> times counted
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver.take(body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> BrokenReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self.ledger.close()

    def take(self, body: bytes) -> int:
        events = read_events(self.fmt, body, CORRELATION_HEADER)
        with self._lock:
            self.posts += 1
            n = self.posts
            fail = False
            for e in events:
                first = e["event_id"] not in self.kind
                self.kind[e["event_id"]] = e["event"]
                if n % self.busy_every == 0:
                    continue  # busy: acknowledged, never counted
                self.counted[e["event_id"]] += 1
                self.ledger.write(SutEvent(event=e["event"], event_id=e["event_id"], api=self.fmt))
                fail = fail or (first and n % self.fail_every == 1)
            return 500 if fail else 200

    def missed(self) -> Counter[str]:
        return Counter(k for eid, k in self.kind.items() if self.counted[eid] == 0)

    def double_counted(self) -> Counter[str]:
        return Counter({k: sum(max(self.counted[e] - 1, 0) for e, kk in self.kind.items() if kk == k)
                        for k in set(self.kind.values())})  # fmt: skip
