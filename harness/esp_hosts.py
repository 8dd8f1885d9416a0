"""A fake ESP served by a fleet of hosts: the runner's side of ``esp.hosts`` and ``mailstorm esp --join``.

The runner starts no fake ESP of its own for an ``esp:`` section with ``hosts``. It serves a small HTTP
API (``esp.join_listen``; every request carries ``Authorization: Bearer <run token>``, the token in
run.json) and waits for one fake ESP to join from each address of ``hosts``
(mailstorm.harness.esp_join is the other side):

    POST /fleet/join    {address}                     -> {index, esp (the section), seed, control_token}
    POST /fleet/ready   {index, smtp_port, control_port, http_port}    the runner checks the control API
    POST /fleet/ledger?index=H&file=esp-smtp-W&offset=N  (raw ledger lines)  -> {offset, stop, t_ns}
    POST /fleet/left?index=H                              the host's ESP stopped, every line shipped

Every timeline ESP fault goes to every host by its control API (``FanOut``). Each host ships its
ledger as it goes (the live counts and the drain read it like a local ESP's); the runner writes host
H's worker W as ``esp-smtp-<H*100+W>`` (``esp-<name>-smtp-...`` for a named ESP), the ``src`` of every
line rewritten to match, so the reports read every host's ledger as the one ESP's. ``offset`` is the
byte offset in the host's own file: a batch sent twice (a retry after a lost answer) is written once.

Clocks. Each host stamps its records by its own clock. Before it says ready, a host measures its offset
to the runner's clock (``POST /fleet/clock``, ``CLOCK_SAMPLES`` round trips, the one of least round trip
kept, as NTP does: the offset is known within half that round trip). When the offset exceeds that
uncertainty, the runner moves every record of that host onto its own clock as it writes it (``t`` minus
the offset): the reports' latencies (intended send at the load, acceptance at a host) are then measured
on one clock. Each ledger call carries the host's latest measurement too, so a clock that drifts during
the run is seen (a warning past ``SKEW_WARN_MS``); run.json's ``esp_hosts`` keeps all three figures.
Each ledger call also tells the host whether to stop (the run's ESP stop step).
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mailstorm.errors import HarnessError, PartDied, UserError
from mailstorm.fake_esp.client import ControlClient
from mailstorm.fake_esp.spec import ledger_source
from mailstorm.harness.scenario import EspSection
from mailstorm.ledger import LedgerWriter
from mailstorm.runinfo import EspInfo

TOKEN_ENV = "MAILSTORM_RUN_TOKEN"  # the runner's: the run token to use (else one is made per run)
HOST_STRIDE = 100  # host H's worker W writes esp-smtp-<H*100+W> (an ESP has at most 64 workers)
SILENT_S = 15.0  # a host that has not shipped for this long is gone (it ships every half second)
LEFT_WAIT_S = 30.0  # at the stop: how long the hosts get to stop their ESP and ship their last lines
MAX_BATCH = 64 * 1024 * 1024
SKEW_WARN_MS = 50.0  # a host's clock drifting this far from the correction made at its join
CLOCK_SAMPLES = 8  # round trips a host makes to measure its clock's offset
# A line's top-level "t": the second key as LedgerWriter encodes a record, the first in older lines.
_T = re.compile(rb'(?m)^(\{(?:"k":"[^"\\]*",)?"t":)(-?\d+)')


@dataclass
class Host:
    """One address of ``esp.hosts`` and what the runner knows of the fake ESP that joined from it."""

    index: int  # 1-based, in the order of esp.hosts
    address: str
    joined: bool = False
    ready: bool = False
    left: bool = False
    esp_died: str | None = None
    smtp_port: int | None = None
    http_port: int | None = None
    control: ControlClient | None = None
    last_seen: float = 0.0  # monotonic
    clock_offset_ms: float | None = None  # its clock minus the runner's, measured at its join
    rtt_ms: float | None = None  # the round trip of that measurement (the offset is known within half)
    shift_ns: int = 0  # what the runner subtracts from its records' t (0: within the uncertainty)
    clock_offset_end_ms: float | None = None  # the latest measurement, from its ledger calls
    offsets: dict[str, int] = field(default_factory=dict)  # the host's file -> bytes received
    writers: dict[str, LedgerWriter] = field(default_factory=dict)


class FanOut:
    """One control client over every host: each change goes to all of them (in order), so a timeline
    ESP fault reaches the whole fleet; the first error is raised after every host was tried."""

    def __init__(self, clients: list[ControlClient]) -> None:
        self.clients = clients

    def _all(self, call: str, *args: Any) -> Any:
        results, error = [], None
        for client in self.clients:
            try:
                results.append(getattr(client, call)(*args))
            except Exception as exc:  # the others must still get the change (or its removal)
                error = error or exc
        if error is not None:
            raise error
        return results[0] if results else None

    def add_fault(self, spec: dict[str, Any]) -> str:
        return self._all("add_fault", spec)

    def replace_fault(self, fault_id: str, spec: dict[str, Any]) -> str:
        return self._all("replace_fault", fault_id, spec)

    def remove_fault(self, fault_id: str) -> None:
        self._all("remove_fault", fault_id)

    def reset(self) -> None:
        self._all("reset")


class EspHosts:
    """The join server and the hosts of one ``esp:`` section with ``hosts``, from ``serve()`` to
    ``stop()``."""

    def __init__(
        self, spec: EspSection, *, seed: int, run_id: str, ledger_dir: Path, allow_remote: bool
    ) -> None:
        self.spec = spec
        self.seed = seed
        self.run_id = run_id
        self.ledger_dir = ledger_dir
        self.allow_remote = allow_remote
        self.token = _run_token()
        self.control_token = secrets.token_urlsafe(24)  # the hosts' control APIs, known to the runner only
        self.hosts = [Host(i + 1, a) for i, a in enumerate(spec.hosts)]
        self.stopping = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the runner's calls ---------------------------------------------------------------------------

    def serve(self) -> str:
        """Listen on ``esp.join_listen``; returns the URL hosts join (``mailstorm esp --join URL``)."""
        host, _, port = self.spec.join_listen.rpartition(":")
        host = host.strip("[]")
        handler = type("Handler", (_Handler,), {"fleet": self})
        server = type("Server", (ThreadingHTTPServer,), {"address_family": _family(host)})
        try:
            self._server = server((host, int(port)), handler)
        except OSError as exc:
            raise UserError(
                f"esp.join_listen {self.spec.join_listen}: cannot listen: {exc.strerror}"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="esp-join", daemon=True)
        self._thread.start()
        bound = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{bound}"

    def wait_ready(self) -> None:
        """Block until a fake ESP joined from every address and answers its control API; ``PartDied``
        naming the missing ones after ``esp.join_timeout``."""
        deadline = time.monotonic() + self.spec.join_timeout
        with self._changed:
            while not all(h.ready for h in self.hosts):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = ", ".join(h.address for h in self.hosts if not h.ready)
                    raise PartDied(
                        f"fake ESP host(s) {missing} did not join within {self.spec.join_timeout:g}s "
                        "(start `mailstorm esp --join URL` there; run.json has the URL and the token)"
                    )
                self._changed.wait(min(left, 0.5))
        for h in self.hosts:
            if h.shift_ns:
                sys.stderr.write(
                    f"mailstorm: fake ESP host {h.address}'s clock is {h.clock_offset_ms:+.1f} ms off the "
                    f"runner's (+-{h.rtt_ms / 2:.1f} ms): its records are put on the runner's clock\n"
                )

    def control(self) -> FanOut:
        return FanOut([h.control for h in self.hosts if h.control is not None])

    def relays(self) -> tuple[tuple[str, int], ...]:
        """Every host's SMTP listener, in the order of ``esp.hosts``."""
        return tuple((h.address, h.smtp_port) for h in self.hosts if h.smtp_port is not None)

    def http_url(self) -> str | None:
        """The first host's HTTP APIs, when served."""
        first = self.hosts[0]
        return None if first.http_port is None else f"http://{_url_host(first.address)}:{first.http_port}"

    def info(self) -> list[EspInfo]:
        return [
            EspInfo(
                name=f"host {h.address}",
                smtp=f"{_url_host(h.address)}:{h.smtp_port}" if h.smtp_port else None,
                http=f"http://{_url_host(h.address)}:{h.http_port}" if h.http_port else None,
                control=h.control.base_url if h.control is not None else None,
                tls="off",
                clock_offset_ms=h.clock_offset_ms,
                rtt_ms=h.rtt_ms,
                clock_shift_ms=h.shift_ns / 1e6,
                clock_offset_end_ms=h.clock_offset_end_ms,
            )
            for h in self.hosts
        ]

    def check(self) -> None:
        """``PartDied`` for a host whose ESP died or that stopped shipping its ledger."""
        now = time.monotonic()
        for h in self.hosts:
            if h.esp_died:
                raise PartDied(f"fake ESP on host {h.address} died: {h.esp_died}")
            if h.ready and not h.left and now - h.last_seen > SILENT_S:
                raise PartDied(f"fake ESP host {h.address} sent nothing for {SILENT_S:g}s")

    def stop(self) -> None:
        """Tell every host to stop its ESP, take their last lines (up to ``LEFT_WAIT_S``), close."""
        self.stopping = True
        deadline = time.monotonic() + LEFT_WAIT_S
        with self._changed:
            while not all(h.left or not h.joined for h in self.hosts) and time.monotonic() < deadline:
                self._changed.wait(0.5)
        late = [h.address for h in self.hosts if h.joined and not h.left]
        for h in self.hosts:
            drift = None if h.clock_offset_end_ms is None else h.clock_offset_end_ms - h.shift_ns / 1e6
            if drift is not None and abs(drift) > SKEW_WARN_MS:
                sys.stderr.write(
                    f"mailstorm: fake ESP host {h.address}'s clock drifted {drift:+.0f} ms from the runner's "
                    "during the run: its latencies are off by up to that (docs/distributed.md)\n"
                )
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for h in self.hosts:
                for w in h.writers.values():
                    w.close()
        if late:
            raise HarnessError(f"fake ESP host(s) {', '.join(late)} did not hand in their last ledger lines")

    # -- the requests ---------------------------------------------------------------------------------

    def join(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        address = str(body.get("address", ""))
        with self._changed:
            host = next((h for h in self.hosts if h.address == address), None)
            if host is None:
                return 403, {"error": f"{address!r} is not in esp.hosts ({', '.join(self.spec.hosts)})"}
            if host.joined:
                return 409, {"error": f"a fake ESP already joined from {address}"}
            host.joined, host.last_seen = True, time.monotonic()
            self._changed.notify_all()
        esp = self.spec.model_dump(mode="json", exclude={"hosts", "join_listen", "join_timeout"})
        return 200, {
            "index": host.index,
            "run_id": self.run_id,
            "esp": esp,
            "seed": self.seed + host.index,
            "control_token": self.control_token,
        }

    def ready(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        host = self._host(body.get("index"))
        if host is None or not host.joined:
            return 404, {"error": "no such host: join first"}
        try:
            smtp, control = int(body["smtp_port"]), int(body["control_port"])
            http = None if body.get("http_port") is None else int(body["http_port"])
            offset, rtt = float(body["clock_offset_ms"]), float(body["rtt_ms"])
        except (KeyError, TypeError, ValueError):
            return 400, {"error": "ready needs smtp_port, control_port, clock_offset_ms and rtt_ms"}
        client = ControlClient(f"http://{_url_host(host.address)}:{control}", self.control_token, timeout=5)
        try:
            if not client.health().get("ready"):
                return 503, {"error": "its control API says it is not ready"}
        except Exception as exc:  # the runner must reach it: say so to the host, which gives up
            return 502, {"error": f"the runner cannot reach its control API: {exc}"}
        with self._changed:
            host.smtp_port, host.http_port, host.control = smtp, http, client
            host.clock_offset_ms, host.rtt_ms = round(offset, 3), round(rtt, 3)
            host.shift_ns = clock_shift_ns(offset, rtt)
            host.ready, host.last_seen = True, time.monotonic()
            self._changed.notify_all()
        return 200, {}

    def ledger(self, query: dict[str, str], data: bytes) -> tuple[int, dict[str, Any]]:
        host = self._host(query.get("index"))
        if host is None or not host.joined:
            return 404, {"error": "no such host: join first"}
        name = query.get("file", "")
        worker = _worker_of(name, self.spec.name)
        if worker is None or worker >= self.spec.processes:
            return 400, {"error": f"file {name!r} is not one of this ESP's ledger files"}
        try:
            offset = int(query.get("offset", ""))
        except ValueError:
            return 400, {"error": "offset must be a byte offset"}
        with self._lock:
            host.last_seen = time.monotonic()
            if query.get("esp") == "died":
                host.esp_died = query.get("why", "its fake ESP process ended")
            if "offset_ms" in query:
                try:
                    host.clock_offset_end_ms = round(float(query["offset_ms"]), 3)
                except ValueError:
                    pass
            have = host.offsets.get(name, 0)
            if offset > have:  # a gap: the host resends from what we have
                return 409, {"offset": have, "stop": self.stopping, "t_ns": time.time_ns()}
            fresh = data[have - offset :]
            end = fresh.rfind(b"\n") + 1  # whole lines only
            fresh = fresh[:end]
            if fresh:
                writer = host.writers.get(name)
                if writer is None:
                    source = ledger_source(self.spec.name, host.index * HOST_STRIDE + worker)
                    writer = host.writers[name] = LedgerWriter(self.ledger_dir, source)
                theirs = f'"src":"{name}"'.encode()
                ours = fresh.replace(theirs, f'"src":"{writer.source}"'.encode())
                writer.write_lines((shift_times(ours, host.shift_ns) if host.shift_ns else ours,))
                host.offsets[name] = have + len(fresh)  # bytes of the host's own file
            return 200, {"offset": host.offsets.get(name, 0), "stop": self.stopping, "t_ns": time.time_ns()}

    def left(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        host = self._host(query.get("index"))
        if host is None:
            return 404, {"error": "no such host"}
        with self._changed:
            host.left = True
            if not self.stopping and host.esp_died is None:
                host.esp_died = "it left the run before the end"
            self._changed.notify_all()
        return 200, {}

    def _host(self, index: Any) -> Host | None:
        try:
            i = int(index)
        except (TypeError, ValueError):
            return None
        return self.hosts[i - 1] if 1 <= i <= len(self.hosts) else None


class _Handler(BaseHTTPRequestHandler):
    fleet: EspHosts
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # the run's console is the progress panel's
        pass

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {self.fleet.token}".encode()):
            return self._answer(401, {"error": "missing or wrong run token (run.json: join.token)"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BATCH:
            return self._answer(400, {"error": "Content-Length missing or too large"})
        data = self.rfile.read(length)
        fleet = self.fleet
        if url.path == "/fleet/ledger":
            return self._answer(*fleet.ledger(query, data))
        if url.path == "/fleet/left":
            return self._answer(*fleet.left(query))
        if url.path == "/fleet/clock":
            return self._answer(200, {"t_ns": time.time_ns()})
        try:
            body = json.loads(data or b"{}")
        except ValueError:
            return self._answer(400, {"error": "body: not valid JSON"})
        if not isinstance(body, dict):
            return self._answer(400, {"error": "body: expected a JSON object"})
        if url.path == "/fleet/join":
            return self._answer(*fleet.join(body))
        if url.path == "/fleet/ready":
            return self._answer(*fleet.ready(body))
        return self._answer(404, {"error": f"POST {url.path}: no such endpoint"})

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


def clock_shift_ns(offset_ms: float, rtt_ms: float) -> int:
    """What to subtract from a host's times: its measured offset, unless that is within the
    measurement's uncertainty (half the round trip), where the clocks cannot be told apart."""
    return 0 if abs(offset_ms) <= rtt_ms / 2 else round(offset_ms * 1e6)


def shift_times(lines: bytes, shift_ns: int) -> bytes:
    """Every line's ``t`` minus ``shift_ns`` (the line otherwise byte for byte as it came)."""

    return _T.sub(lambda m: m.group(1) + str(int(m.group(2)) - shift_ns).encode(), lines)


def _run_token() -> str:
    token = os.environ.get(TOKEN_ENV, "")
    if token and len(token) < 16:
        raise UserError(f"${TOKEN_ENV}: a run token has at least 16 characters")
    return token or secrets.token_urlsafe(24)


def _worker_of(name: str, esp: str | None) -> int | None:
    """The worker number of a host's ledger file ``name`` (its stem), or None when it is not the ESP's."""
    pattern = re.escape(ledger_source(esp, 0))[: -len("0")] + r"(\d{1,2})"
    m = re.fullmatch(pattern, name)
    return None if m is None else int(m.group(1))


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
