"""``mailstorm esp --join URL``: a fake ESP on this host serving a run whose runner is elsewhere.

The host's side of mailstorm.harness.esp_hosts: join the run (the runner answers with the run's ESP
section: profile, faults, limits), start the fake ESP as a child process (``EspProcess``) listening on
``--bind`` (default: the address this host reaches the runner from), tell the runner where it listens
(the runner checks its control API, and adds and removes the timeline's faults there), then ship the
ESP's ledger to the runner every ``SHIP_EVERY_S`` from a local spool (``--ledger``, a directory per
run), by byte offset, so a batch sent twice is written once. When the runner says stop (the run's ESP
stop step), stop the ESP, ship the last lines, say so and exit 0. A runner gone for ``RUNNER_LOST_S``
ends it too (exit 3): nothing of a run outlives it on this host either. SIGINT or SIGTERM here stops the
ESP the same way, ships what it wrote and leaves (the runner fails the run: a host left early; exit
128 + the signal).

The token comes from ``$MAILSTORM_RUN_TOKEN`` or ``--run-token-file`` (a command line is visible to every
local user); a runner off loopback needs ``--allow-remote``, as every mailstorm traffic off loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from mailstorm.errors import EXIT_OK, EXIT_SIGNALLED, HarnessError, MailstormError, UserError
from mailstorm.fake_esp.spec import ledger_source
from mailstorm.harness.esp_hosts import CLOCK_SAMPLES, TOKEN_ENV
from mailstorm.harness.esp_setup import esp_process
from mailstorm.harness.scenario import EspSection
from mailstorm.ledger import LEDGER_SUFFIX
from mailstorm.ledger.segments import SEGMENT_ENV
from mailstorm.netguard import check_address

SHIP_EVERY_S = 0.5
RUNNER_LOST_S = 30.0
CHUNK = 8 * 1024 * 1024  # bytes per ledger call at most
DEFAULT_HTTP_PORT = 8080


class _Runner:
    """The runner's join API (urllib; every call carries the run token)."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url.rstrip("/"), token

    def call(self, path: str, body: bytes, query: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        full = self.url + path + (f"?{urlencode(query)}" if query else "")
        req = urllib.request.Request(full, data=body, method="POST")
        req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {"error": str(exc.reason)}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HarnessError(f"runner at {self.url} unreachable: {getattr(exc, 'reason', exc)}") from None

    def json(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = self.call(path, json.dumps(body).encode())
        if status != 200:
            raise UserError(f"--join {self.url}: {path}: {answer.get('error', f'HTTP {status}')}")
        return answer


class _Shipper:
    """The ESP's ledger files in the spool, shipped by offset; the clock offset measured on the way."""

    def __init__(self, runner: _Runner, index: int, spool: Path, files: list[str]) -> None:
        self.runner, self.index, self.spool, self.files = runner, index, spool, files
        self.sent = dict.fromkeys(files, 0)
        self.best: tuple[float, float] | None = None  # (rtt ms, offset ms) of the quickest call
        self.stop = False
        self.last_ok = time.monotonic()

    def clock(self) -> tuple[float, float]:
        """(offset ms: this host's clock minus the runner's, round trip ms), from the quickest of
        ``CLOCK_SAMPLES`` round trips (the offset is known within half of it)."""
        samples = []
        for _ in range(CLOCK_SAMPLES):
            sent = time.time_ns()
            status, answer = self.runner.call("/fleet/clock", b"")
            got = time.time_ns()
            if status == 200:
                samples.append(((got - sent) / 1e6, ((sent + got) / 2 - int(answer["t_ns"])) / 1e6))
        if not samples:
            raise HarnessError("the runner did not answer the clock measurement")
        rtt, offset = min(samples)
        return offset, rtt

    def ship(self, *, died: str | None = None) -> bool:
        """One round over every file; True when everything on disk has been taken."""
        done = True
        for name in self.files:
            path = self.spool / f"{name}{LEDGER_SUFFIX}"
            try:
                with path.open("rb") as fh:
                    fh.seek(self.sent[name])
                    data = fh.read(CHUNK)
            except FileNotFoundError:
                data = b""
            data = data[: data.rfind(b"\n") + 1]  # whole lines: the ESP may be mid-write
            query: dict[str, Any] = {"index": self.index, "file": name, "offset": self.sent[name]}
            if self.best is not None:
                query["offset_ms"] = f"{self.best[1]:.3f}"
            if died is not None:
                query |= {"esp": "died", "why": died}
            sent_ns = time.time_ns()
            status, answer = self.runner.call("/fleet/ledger", data, query)
            got_ns = time.time_ns()
            if status not in (200, 409):
                raise HarnessError(f"runner refused the ledger: {answer.get('error', f'HTTP {status}')}")
            self.last_ok = time.monotonic()
            self.sent[name] = int(answer["offset"])
            self.stop = self.stop or bool(answer.get("stop"))
            rtt = (got_ns - sent_ns) / 1e6
            if "t_ns" in answer and (self.best is None or rtt < self.best[0]):
                self.best = (rtt, ((sent_ns + got_ns) / 2 - int(answer["t_ns"])) / 1e6)
            done = done and status == 200 and len(data) < CHUNK and self._at_end(path, name)
        return done

    def _at_end(self, path: Path, name: str) -> bool:
        try:
            return path.stat().st_size <= self.sent[name] or not _whole(path, self.sent[name])
        except FileNotFoundError:
            return True


def _whole(path: Path, offset: int) -> bool:
    """Whether bytes past ``offset`` hold a whole line (a torn last line is never shipped)."""
    with path.open("rb") as fh:
        fh.seek(offset)
        return b"\n" in fh.read(CHUNK)


def _token(args: argparse.Namespace) -> str:
    if args.run_token_file is not None:
        try:
            return args.run_token_file.read_text().strip()
        except OSError as exc:
            raise UserError(f"--run-token-file {args.run_token_file}: {exc.strerror or exc}") from None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UserError(
            f"--join needs the run token: ${TOKEN_ENV} or --run-token-file (run.json: join.token)"
        )
    return token


def _local_address(host: str, port: int) -> str:
    """The address this host reaches ``host`` from (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        return s.getsockname()[0]


def join(args: argparse.Namespace) -> int:
    url = args.join.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.port is None:
        raise UserError(f"--join {args.join!r}: expected http://HOST:PORT (run.json: join.url)")
    check_address(parts.hostname, allow_remote=args.allow_remote, what="--join")
    runner = _Runner(url, _token(args))
    advertise = args.advertise or _local_address(parts.hostname, parts.port)
    check_address(advertise, allow_remote=args.allow_remote, what="--advertise")
    deadline = time.monotonic() + args.join_wait
    while True:  # the hosts may be started before the runner: wait for it
        try:
            joined = runner.json("/fleet/join", {"address": advertise})
            break
        except HarnessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)  # retry period while the runner is not up yet
    index = int(joined["index"])
    esp = EspSection.model_validate(joined["esp"])
    http_port = None if esp.http_port is None else (args.http_port or DEFAULT_HTTP_PORT)
    esp = esp.model_copy(update={"bind": args.bind or advertise, "token": joined["control_token"]})
    spool = Path(args.ledger or "esp-ledger") / f"{joined['run_id']}-host{index}"
    files = [ledger_source(esp.name, w) for w in range(esp.processes)]
    # The shipper follows each worker's one open ledger file by byte offset: the host's fake ESP keeps
    # it whole (no rotation into segments); the runner writes what it receives into the run's ledger.
    os.environ[SEGMENT_ENV] = "0"
    proc = esp_process(
        esp,
        seed=int(joined["seed"]),
        run_dir=spool,
        ledger_dir=spool,
        log_path=spool / "esp.log",
        ports=(args.smtp_port, http_port, args.control_port),
        host="127.0.0.1" if esp.bind in ("0.0.0.0", "::") else esp.bind,
    )
    print(f"mailstorm: joined run {joined['run_id']} as host {index} ({advertise})", file=sys.stderr)
    shipper = _Shipper(runner, index, spool, files)
    stopping = {"signal": 0}

    def on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    died: str | None = None
    proc.start()
    try:
        offset_ms, rtt_ms = shipper.clock()
        runner.json(
            "/fleet/ready",
            {
                "clock_offset_ms": offset_ms,
                "rtt_ms": rtt_ms,
                "index": index,
                "smtp_port": proc.smtp_port,
                "control_port": proc.control_port,
                "http_port": http_port,
            },
        )
        while not shipper.stop and not stopping["signal"] and died is None:
            time.sleep(SHIP_EVERY_S)  # the shipping period
            died = None if proc.alive() else f"its fake ESP exited (see {spool / 'esp.log'})"
            try:
                shipper.ship(died=died)
            except HarnessError:
                if time.monotonic() - shipper.last_ok > RUNNER_LOST_S:
                    raise HarnessError(f"the runner at {url} went away") from None
    finally:
        proc.stop()
        for s, h in old.items():
            signal.signal(s, h)
    for _ in range(100):  # the last lines, then say so
        try:
            if shipper.ship():
                break
        except MailstormError:
            time.sleep(SHIP_EVERY_S)
    runner.call("/fleet/left", b"", {"index": index})
    print(f"mailstorm: left run {joined['run_id']}; ledger spool {spool}", file=sys.stderr)
    if died is not None:
        raise HarnessError(died)
    return EXIT_SIGNALLED + stopping["signal"] if stopping["signal"] else EXIT_OK
