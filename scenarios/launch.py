"""Starting the load: Locust, headless, in processes of its own (standalone, or master + local workers).

``LoadRun`` is how the runner (and the tests, and the benchmark) run a ``LoadSpec`` against endpoints:
one standalone Locust process when ``spec.workers == 1`` and no remote workers are expected, else a
master plus ``spec.workers`` local worker processes (remote ones join with ``mailstorm worker``). Each
load process writes ``load-<index>.jsonl`` into ``ledger_dir``. The load is bounded: every process stops
by itself after ``duration_s`` plus a bounded drain, and Locust's ``--run-time`` is set as a backstop.

This module never imports locust (it only spawns ``python -m locust``), so the runner and pytest can
use it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import orjson

from mailstorm import PYTHON_M
from mailstorm.deathsig import die_with_parent
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.targets.base import Endpoint
from mailstorm.netguard import check_address
from mailstorm.ports import free_port
from mailstorm.scenarios.model import LoadSpec
from mailstorm.scenarios.shapes import expected_count

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEDGER_DIR_ENV = "MAILSTORM_LEDGER_DIR"  # where a load process started here writes its ledger
SPOOL_DIR_ENV = "MAILSTORM_SPOOL_DIR"  # a remote worker's local copy of the ledger it ships
# "1" when the user allowed traffic off loopback: every load process checks the endpoints it is sent
# (a remote worker gets them from the master, so it applies its own --allow-remote, not the master's).
ALLOW_REMOTE_ENV = "MAILSTORM_ALLOW_REMOTE"
# How long the master waits for its workers to connect before giving up.
LOCAL_WORKERS_WAIT_S = 60
REMOTE_WORKERS_WAIT_S = 300
_STOP_GRACE_S = 10.0
_POLL_S = 0.1


def locust_args(spec: LoadSpec, endpoints: list[Endpoint], *, run_id: str, seed: int) -> list[str]:
    """The mailstorm options every Locust process gets (the master forwards them to workers)."""
    eps = [{"kind": e.kind, "host": e.host, "port": e.port, "url": e.url} for e in endpoints]
    return [
        "--mailstorm-spec",
        spec.model_dump_json(),
        "--mailstorm-endpoints",
        orjson.dumps(eps).decode(),
        "--mailstorm-run-id",
        run_id,
        "--mailstorm-seed",
        str(seed),
    ]


def drain_bound_s(spec: LoadSpec) -> float:
    """The longest a load process keeps going after duration_s (mirrors mailstorm.scenarios.driver's
    bound)."""
    return spec.max_lag_s + 4 * spec.timeout_s


class LoadRun:
    """A running load: ``start()``, then ``wait()`` (it ends by itself) or ``stop()``."""

    def __init__(
        self,
        spec: LoadSpec,
        endpoints: list[Endpoint],
        ledger_dir: str | os.PathLike[str],
        *,
        run_id: str,
        seed: int,
        log_dir: str | os.PathLike[str] | None = None,
        allow_remote: bool = False,
    ) -> None:
        if not endpoints:
            raise UserError("load: no endpoint to send to")
        for ep in endpoints:
            if ep.kind != spec.protocol:
                raise UserError(f"load.protocol is {spec.protocol!r} but endpoint {ep} is {ep.kind!r}")
            if ep.kind == "http" and not ep.url:
                raise UserError(f"load: http endpoint {ep} has no url")
            check_address(endpoint_host(ep), allow_remote=allow_remote)
        if spec.remote_workers:
            check_address(spec.master_bind, allow_remote=allow_remote, what="load master bind address")
        self.spec = spec
        self.allow_remote = allow_remote
        self.endpoints = list(endpoints)
        self.ledger_dir = Path(ledger_dir)
        self.run_id = run_id
        self.seed = seed
        self.log_dir = (
            Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="mailstorm-load-"))
        )
        self.master_port: int | None = None
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._logs: list[IO[bytes]] = []
        self._started_mono: float | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env[LEDGER_DIR_ENV] = str(self.ledger_dir.resolve())
        env[ALLOW_REMOTE_ENV] = "1" if self.allow_remote else "0"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        cmd = [sys.executable, *PYTHON_M, "locust", "-f", str(LOCUSTFILE), *args]
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Locust puts its working directory first on sys.path to import a locustfile: started inside a
            # source checkout (a CI job), that would be the checkout's mailstorm/ folder, the ground alone,
            # instead of the installed package. The log directory holds no module.
            cwd=self.log_dir.resolve(),
            **die_with_parent(),  # the load ends with whoever started it, SIGKILL included
        )
        self._procs.append((name, proc))
        return proc

    def start(self) -> LoadRun:
        """Start the Locust process(es) and return at once; the load begins when every worker is in."""
        if self._procs:
            raise HarnessError("this LoadRun was already started")
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        spec = self.spec
        backstop = int(spec.duration_s + drain_bound_s(spec) + 30)
        common = [
            "--headless",
            "--only-summary",
            "--exit-code-on-error",
            "0",
            "--run-time",
            f"{backstop}s",
            "--stop-timeout",
            str(int(drain_bound_s(spec)) + 5),
            "--csv",
            str(self.log_dir / "locust"),
            *locust_args(spec, self.endpoints, run_id=self.run_id, seed=self.seed),
        ]
        if not spec.distributed:
            self._spawn("locust", [*common, "--users", "1", "--spawn-rate", "1"])
        else:
            n = spec.processes
            self.master_port = spec.master_port or free_port(spec.master_bind)
            wait = REMOTE_WORKERS_WAIT_S if spec.remote_workers else LOCAL_WORKERS_WAIT_S
            self._spawn(
                "locust-master",
                [
                    *common,
                    "--master",
                    "--master-bind-host",
                    spec.master_bind,
                    "--master-bind-port",
                    str(self.master_port),
                    "--expect-workers",
                    str(n),
                    "--expect-workers-max-wait",
                    str(wait),
                    "--users",
                    str(n),
                    "--spawn-rate",
                    str(n),
                ],
            )
            connect_to = "127.0.0.1" if spec.master_bind in ("0.0.0.0", "::") else spec.master_bind
            for i in range(spec.workers):
                self._spawn(
                    f"locust-worker-{i}",
                    ["--worker", "--master-host", connect_to, "--master-port", str(self.master_port)],
                )
        self._started_mono = time.monotonic()
        return self

    @property
    def pids(self) -> dict[str, int]:
        """Each Locust process this run started, by name (``locust``, or ``locust-master`` and
        ``locust-worker-<n>``; their logs are ``<log_dir>/<name>.log``)."""
        return {name: proc.pid for name, proc in self._procs}

    def _failed_worker(self) -> tuple[str, int] | None:
        for name, proc in self._procs[1:]:
            code = proc.poll()
            if code is not None and code != 0:
                return name, code
        return None

    def alive(self) -> bool:
        """The load is running: the master (or standalone process) is up and no local worker failed."""
        return bool(self._procs) and self._procs[0][1].poll() is None and self._failed_worker() is None

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the load to end by itself; return the master's (standalone's) exit code.

        Raises HarnessError if it has not ended within ``timeout`` seconds (it keeps running: call
        ``stop()``), or if a local worker died: then the rest are stopped first, so their in-flight
        submissions are recorded.
        """
        if not self._procs:
            raise HarnessError("LoadRun.wait() before start()")
        deadline = None if timeout is None else time.monotonic() + timeout
        master = self._procs[0][1]
        while (code := master.poll()) is None:
            if failed := self._failed_worker():
                self.stop()
                name, wcode = failed
                raise HarnessError(f"load: {name} exited with {wcode}; see {self.log_dir / name}.log")
            if deadline is not None and time.monotonic() > deadline:
                raise HarnessError(f"load: {self._procs[0][0]} still running after {timeout:g} s")
            time.sleep(_POLL_S)  # the period of a check on child processes, not a stand-in for one
        # The master has ended and told its workers to quit: they follow within moments.
        for name, proc in self._procs[1:]:
            try:
                wcode = proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.stop()
                raise HarnessError(f"load: {name} still running after its master ended") from None
            if wcode != 0:
                self._close_logs()
                raise HarnessError(f"load: {name} exited with {wcode}; see {self.log_dir / name}.log")
        self._close_logs()
        return code

    def stop(self) -> None:
        """Stop every Locust process (SIGTERM, then SIGKILL after a grace period); idempotent."""
        for _, proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for _, proc in self._procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_logs()

    def _close_logs(self) -> None:
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LoadRun:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- progress -------------------------------------------------------------------------------------

    def offered_so_far(self) -> int | None:
        """Messages the open-model schedule has offered since start() (None for the closed model);
        approximate: Locust takes a second or two to start before the schedule's t=0."""
        if self._started_mono is None or self.spec.closed:
            return None
        elapsed = time.monotonic() - self._started_mono
        # Uniform arrivals sit where the integral reaches n - 0.5: rounding it counts them exactly.
        return round(expected_count(self.spec.shape, self.spec.duration_s, elapsed))  # type: ignore[arg-type]


def endpoint_host(ep: Endpoint) -> str:
    """The host an endpoint sends traffic to (for the loopback guard)."""
    if ep.kind == "smtp":
        return ep.host
    host = urlsplit(ep.url or "").hostname
    if not host:
        raise UserError(f"load: endpoint url {ep.url!r} has no host")
    return host
