"""The webhook receiver: Alertmanager's notifications, each alert in them one ledger record.

Alertmanager's webhook posts ``{"status", "alerts": [{"status", "labels", "annotations", "startsAt",
"endsAt", "fingerprint"}...], ...}``; every alert of every post becomes an ``alert.firing`` or
``alert.resolved`` record in ``ledger/alerts.jsonl``, dated when it arrived. A threading HTTP server on
loopback (a few posts a second at most: no event loop needed), in daemon threads, from ``start()`` to
``stop()``. A body that is not such a JSON object is answered 400 and written nowhere.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from mailstorm.ledger import AlertFiring, AlertResolved, LedgerWriter

HOST = "127.0.0.1"
MAX_BODY = 1024 * 1024


def notices(payload: Any) -> list[AlertFiring | AlertResolved]:
    """The records of one webhook payload; ValueError naming what is wrong with it."""
    if not isinstance(payload, dict) or not isinstance(payload.get("alerts"), list):
        raise ValueError("not an Alertmanager webhook payload (a JSON object with an 'alerts' list)")
    out: list[AlertFiring | AlertResolved] = []
    for alert in payload["alerts"]:
        if not isinstance(alert, dict) or not isinstance(alert.get("labels"), dict):
            raise ValueError("an alert without labels")
        labels = {str(k): str(v) for k, v in alert["labels"].items()}
        notes = alert.get("annotations") if isinstance(alert.get("annotations"), dict) else {}
        common = {
            "name": labels.get("alertname", ""),
            "fingerprint": str(alert.get("fingerprint") or ""),
            "labels": labels,
            "starts_at": alert.get("startsAt"),
            "summary": notes.get("summary") or notes.get("description"),
        }
        if alert.get("status") == "resolved":
            ends = alert.get("endsAt")
            out.append(AlertResolved(**common, ends_at=ends if isinstance(ends, str) else None))
        else:  # Alertmanager sends the zero time as a firing alert's endsAt: not kept
            out.append(AlertFiring(**common))
    return out


class AlertReceiver:
    """Receives at ``url`` (any path) and writes to ``ledger_dir/alerts.jsonl``."""

    def __init__(self, ledger_dir, port: int = 0) -> None:
        self.writer = LedgerWriter(ledger_dir, "alerts")
        self.received = 0  # alerts recorded
        self._lock = threading.Lock()
        self._firing: dict[str, str] = {}  # fingerprint (else name) -> alert name, of alerts firing now
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 < length <= MAX_BODY:
                    return self._answer(400, b"a JSON body of at most 1 MiB")
                try:
                    records = notices(orjson.loads(self.rfile.read(length)))
                except (orjson.JSONDecodeError, ValueError) as exc:
                    return self._answer(400, str(exc).encode())
                for rec in records:
                    receiver.writer.write(rec)
                    receiver._note(rec)
                receiver.received += len(records)
                return self._answer(200, b"ok")

            def _answer(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:  # the ledger is the log
                pass

        self._server = ThreadingHTTPServer((HOST, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def _note(self, rec: AlertFiring | AlertResolved) -> None:
        with self._lock:
            if isinstance(rec, AlertFiring):
                self._firing[rec.fingerprint or rec.name] = rec.name
            else:
                self._firing.pop(rec.fingerprint or rec.name, None)

    def firing(self) -> list[str]:
        """The names of the alerts firing now (fired, not resolved since), one per alert."""
        with self._lock:
            return sorted(self._firing.values())

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/alerts"

    def start(self) -> AlertReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, name="alert-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5.0)
            self._thread = None
        self._server.server_close()
        self.writer.close()
