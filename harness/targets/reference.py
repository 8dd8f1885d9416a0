"""The ``reference`` target: the embedded reference pipeline (mailstorm.harness.reference), one or more
instances,
each its own process relaying to the run's fake ESP, and each breakable on the chaos timeline.

Each instance gets its own SMTP port, health/metrics port, SQLite queue (``<run>/reference/queue-N.sqlite``),
ledger source (``sut``, or ``sut-N`` with several instances) and log (``<run>/logs/reference-N.log``,
appended across restarts). The ports are kept across restarts, so the load's endpoints stay valid.

With several ESPs (``esps:``) each instance relays to the first and fails over to the others in order
(``failover_after`` consecutive failed attempts; back once a trial message every ``failback_probe_s``
gets through the first: mailstorm.harness.reference.failover).

Towards an ESP that requires TLS and AUTH (``esp: {tls, require_tls, auth}``), each instance relays as a
production relay would: STARTTLS or implicit TLS (https for ``relay: http``) trusting the run's CA
(``<run>/esp/ca.pem``), logged in with the ESP's first credential (for ``relay: http``, its password is the
API key, as SendGrid's SMTP password is), passed in the environment, never on the command line.

Actions: ``kill`` (SIGKILL: a crash; the queue file survives), ``stop`` (SIGTERM: a clean shutdown),
``pause``/``sigstop`` (SIGSTOP: a frozen host), ``resume``/``sigcont`` (SIGCONT), ``start`` (start it if
it is not running), ``restart`` (stop it if it runs, start it again; the new process resumes the queue, and
messages that were in flight at a kill are relayed again: at-least-once). Params: ``instance`` (an index)
acts on one instance; without it the action applies to all.

Webhooks (``WebhookReceiving``): instance 0 receives the ESP's event webhooks on its HTTP port,
``POST /webhooks/<format>``, counted once per event id in its queue file, and answers the counts at ``GET
/analytics`` (mailstorm.harness.reference.webhooks); its signing key comes in the environment
(``MAILSTORM_WEBHOOK_KEY``).

Backups (mailstorm.harness.snapshots): ``snapshot`` (``params: {name}``) copies each queue file with
SQLite's online backup API, consistent while the pipeline runs, to ``<run>/snapshots/<name>/queue-N.sqlite``;
``restore`` puts that copy back in place of the queue file and ``wipe`` deletes the queue file (with its
WAL), both on a stopped or killed instance (a running one keeps its open file: the restore would not be
what it reads); the next ``start`` resumes from what is there.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import mailstorm.harness
from mailstorm import PYTHON_M
from mailstorm.deathsig import die_with_parent
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.descendants import terminate_child
from mailstorm.harness.reference.config import RELAY_AUTH_ENV
from mailstorm.harness.reference.store import count_rows, queued_ids
from mailstorm.harness.snapshots import (
    BACKUP_ACTIONS,
    RESTORE,
    SNAPSHOT,
    WIPE,
    fresh_dir,
    snapshot_name,
    taken,
)
from mailstorm.harness.targets.base import Address, Endpoint, HeldQueue, TargetContext, register
from mailstorm.ports import free_port, wait_for_port

HOST = "127.0.0.1"  # the pipeline is loopback only here; an off-machine relay is not what this target is for
ACTIONS = (
    frozenset({"kill", "stop", "pause", "sigstop", "resume", "sigcont", "start", "restart"}) | BACKUP_ACTIONS
)
_PROJECT_ROOT = str(Path(mailstorm.harness.__file__).resolve().parents[1])


class ReferenceTargetSpec(BaseModel):
    """The embedded reference pipeline as the system under test."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["reference"] = "reference"
    instances: int = Field(1, ge=1, le=32, description="pipeline processes; the load round-robins over them")
    relay: Literal["smtp", "http"] = Field("smtp", description="relay over SMTP or the SendGrid API")
    concurrency: int = Field(20, ge=1, le=2000, description="relay connections per instance")
    max_attempts: int = Field(25, ge=1, description="relay attempts before a message bounces")
    backoff_base_s: float = Field(0.2, gt=0, description="first retry delay (s); doubles per attempt")
    backoff_max_s: float = Field(5.0, gt=0, description="retry delay cap (s)")
    relay_timeout_s: float = Field(10.0, gt=0, description="per-command timeout towards the ESP (s)")
    queue_interval_s: float = Field(1.0, gt=0, description="period of the sut.queue ledger records (s)")
    port: int = Field(0, ge=0, le=65535, description="SMTP port of instance 0 (others: free); 0 = free")
    fsync: bool = Field(False, description="fsync each queue commit (survives power loss, slower)")
    api_key: str = Field("mailstorm-reference", min_length=1, description="Bearer key for relay: http")
    ready_timeout_s: float = Field(15.0, gt=0)
    stop_timeout_s: float = Field(10.0, gt=0, description="SIGTERM grace before SIGKILL")
    failover_after: int = Field(
        3, ge=1, description="with several ESPs: consecutive failed attempts before the next ESP"
    )
    failback_probe_s: float = Field(
        2.0, gt=0, description="while failed over: one message this often tried through the primary (s)"
    )

    @model_validator(mode="after")
    def _backoff(self) -> ReferenceTargetSpec:
        if self.backoff_max_s < self.backoff_base_s:
            raise ValueError("backoff_max_s must be >= backoff_base_s")
        return self


class _Instance:
    """One pipeline process: its ports, files and the Popen of its current life."""

    def __init__(self, index: int, source: str, port: int, http_port: int, queue: Path, log: Path) -> None:
        self.index = index
        self.source = source
        self.port = port
        self.http_port = http_port
        self.queue = queue
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def name(self) -> str:
        return f"reference pipeline {self.index}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self, argv: list[str], env: dict[str, str], timeout: float) -> int:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in the runner's terminal reaches the runner, which stops us
                **die_with_parent(),  # ...and a runner killed with -9 still takes us along
            )
        what = f"{self.name} (log {self.log})"
        try:
            wait_for_port(HOST, self.port, timeout, what=what, alive=self.alive)
            wait_for_port(HOST, self.http_port, timeout, what=what, alive=self.alive)
        except HarnessError:
            self.terminate(graceful=False, timeout=1.0)
            raise
        return self.proc.pid

    def signal(self, sig: signal.Signals, action: str) -> int:
        if not self.alive():
            raise HarnessError(f"{self.name}: cannot {action}: it is not running")
        self.proc.send_signal(sig)
        return self.proc.pid

    def terminate(self, *, graceful: bool, timeout: float) -> None:
        terminate_child(self.proc, graceful=graceful, timeout=timeout)


@register
class ReferenceTarget:
    """Starts the reference pipeline instance(s); acts on them; reports their queue depth."""

    spec_model = ReferenceTargetSpec

    def __init__(self, spec: ReferenceTargetSpec) -> None:
        self.spec = spec
        self._instances: list[_Instance] = []
        self._argv: dict[int, list[str]] = {}
        self._env: dict[str, str] = {}
        self._run_dir: Path | None = None
        self._atexit = False
        self._http0: int | None = None  # instance 0's HTTP port, taken early when the ESP posts to it

    # -- Target -------------------------------------------------------------------------------------
    def addresses(self) -> list[Address]:
        """The pipeline listens on loopback (it relays to the run's own fake ESP)."""
        return [Address(HOST)]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        spec = self.spec
        if spec.relay == "http":
            if not ctx.esp_http:
                raise UserError("target.relay: http needs the fake ESP's HTTP API (set esp.http_port)")
            relay = ctx.esp_http.rstrip("/")
        else:
            relay = f"smtp://{ctx.esp_smtp[0]}:{ctx.esp_smtp[1]}"
        # Several ESPs (esps:): the others are fallbacks over SMTP, in order (failover).
        relays = [relay, *(f"smtp://{host}:{port}" for host, port in ctx.esp_relays[1:])]
        run_dir = self._run_dir = Path(ctx.run_dir)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        pythonpath = os.pathsep.join(p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
        self._env = {**os.environ, **ctx.env, "PYTHONPATH": pythonpath}
        login = ctx.esp_security.login
        self._env[RELAY_AUTH_ENV] = f"{login[0]}:{login[1]}" if login is not None else ""
        if not self._atexit:
            atexit.register(self.stop)  # a runner that exits without stop() still leaves nothing behind
            self._atexit = True
        endpoints = []
        for n in range(spec.instances):
            base = ctx.ledger_source or "sut"
            source = base if spec.instances == 1 else f"{base}-{n}"
            port = spec.port if n == 0 and spec.port else free_port(HOST)
            inst = _Instance(
                n,
                source,
                port,
                self._http0 if n == 0 and self._http0 is not None else free_port(HOST),
                run_dir / "reference" / f"queue-{n}.sqlite",
                run_dir / "logs" / f"reference-{n}.log",
            )
            # A fleet of hosts: each instance starts at its own host (the others are its fallbacks).
            mine = relays[n % len(relays) :] + relays[: n % len(relays)] if ctx.esp_spread else relays
            self._argv[n] = self._command(inst, mine, ctx)
            self._instances.append(inst)
            inst.spawn(self._argv[n], self._env, spec.ready_timeout_s)
            endpoints.append(Endpoint("smtp", HOST, port))
        return endpoints

    def stop(self) -> None:
        """SIGTERM every instance (SIGKILL after ``stop_timeout_s``); idempotent."""
        for inst in self._instances:
            inst.terminate(graceful=True, timeout=self.spec.stop_timeout_s)

    def _command(self, inst: _Instance, relays: list[str], ctx: TargetContext) -> list[str]:
        s = self.spec
        argv = [
            sys.executable, *PYTHON_M, "mailstorm.harness.reference",
            "--listen", f"{HOST}:{inst.port}",
            "--queue", str(inst.queue),
            *(arg for relay in relays for arg in ("--relay", relay)),
            "--failover-after", str(s.failover_after),
            "--failback-probe", str(s.failback_probe_s),
            "--ledger", str(ctx.ledger_dir),
            "--source", inst.source,
            "--concurrency", str(s.concurrency),
            "--max-attempts", str(s.max_attempts),
            "--backoff-base", str(s.backoff_base_s),
            "--backoff-max", str(s.backoff_max_s),
            "--relay-timeout", str(s.relay_timeout_s),
            "--queue-interval", str(s.queue_interval_s),
            "--http-port", str(inst.http_port),
            "--seed", str(ctx.seed + inst.index),
        ]  # fmt: skip
        security = ctx.esp_security
        if security.login is None:
            argv += ["--api-key", s.api_key]  # the ESP checks no key; a credential's goes in the environment
        if security.tls != "off":
            argv += ["--relay-tls", security.tls, "--relay-ca", str(security.ca)]
        if s.fsync:
            argv.append("--fsync")
        if ctx.allow_remote:
            argv.append("--allow-remote")  # the relay host may then be off loopback; we still listen on it
        return argv

    # -- what probes and the runner can read ----------------------------------------------------------
    @property
    def health_urls(self) -> list[str]:
        """GET /health of each instance: 200 ok, 503 while every relay attempt has failed for a second."""
        return [f"http://{HOST}:{i.http_port}/health" for i in self._instances]

    @property
    def metrics_urls(self) -> list[str]:
        return [f"http://{HOST}:{i.http_port}/metrics" for i in self._instances]

    # -- WebhookReceiving -------------------------------------------------------------------------------
    def webhook_url(self, fmt: str) -> str:
        """Instance 0's receiver for format ``fmt`` (its HTTP port taken now: the ESP starts first)."""
        if self._http0 is None:
            self._http0 = free_port(HOST)
        return f"http://{HOST}:{self._http0}/webhooks/{fmt}"

    @property
    def analytics_urls(self) -> list[str]:
        """GET /analytics of instance 0, the one that receives the webhooks."""
        return [f"http://{HOST}:{i.http_port}/analytics" for i in self._instances[:1]]

    @property
    def pids(self) -> list[int | None]:
        return [i.proc.pid if i.alive() else None for i in self._instances]

    # -- Alive / QueueSampler / QueueLister ---------------------------------------------------------
    def alive(self) -> bool:
        """True while every instance runs (a paused one counts as running)."""
        return bool(self._instances) and all(i.alive() for i in self._instances)

    def queue_depth(self) -> int | None:
        """Messages queued in all instances, read from the queue files (so also while paused or dead)."""
        depths = [count_rows(i.queue) for i in self._instances]
        known = [d for d in depths if d is not None]
        return sum(known) if known else None

    def held_ids(self) -> HeldQueue | None:
        """Every message still in the instances' queue files, by correlation id (queue id
        ``queue-N:ROW``); None when a queue file cannot be read."""
        held: dict[str, str | None] = {}
        for inst in self._instances:
            if not inst.queue.exists():
                continue  # never started, so it holds nothing
            rows = queued_ids(inst.queue)
            if rows is None:
                return None
            held.update((corr, f"queue-{inst.index}:{row}") for row, corr in rows)
        return HeldQueue(held)

    # -- Actionable -----------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        return ACTIONS

    def act(self, action: str, **params: Any) -> str:
        if action not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            raise UserError(f"reference target: unknown action {action!r}; known: {known}")
        allowed = {"instance", "name"} if action in (SNAPSHOT, RESTORE) else {"instance"}
        extra = set(params) - allowed
        if extra:
            takes = " and ".join(repr(a) for a in sorted(allowed))
            raise UserError(f"reference target: action {action!r} takes only {takes}, got {sorted(extra)}")
        chosen = self._select(params.get("instance"))
        if action in BACKUP_ACTIONS:
            return self._backup(action, chosen, params)
        return "; ".join(self._act_one(inst, action) for inst in chosen)

    def _backup(self, action: str, chosen: list[_Instance], params: dict[str, Any]) -> str:
        assert self._run_dir is not None, "start() first"
        if action == SNAPSHOT:
            name = snapshot_name("reference", action, params)
            where = fresh_dir(self._run_dir, name)
            for inst in chosen:
                snapshot_queue(inst.queue, where / inst.queue.name)
            return f"snapshot {name!r} of {len(chosen)} queue file(s) in {where}"
        running = [inst.name for inst in chosen if inst.alive()]
        if running:
            raise HarnessError(
                f"reference target: cannot {action} {', '.join(running)}: stop or kill it first"
            )
        if action == WIPE:
            for inst in chosen:
                remove_queue(inst.queue)
            return f"wiped {len(chosen)} queue file(s)"
        name = snapshot_name("reference", action, params)
        where = taken(self._run_dir, "reference", name)
        for inst in chosen:
            copy = where / inst.queue.name
            if not copy.is_file():
                raise HarnessError(f"reference target: snapshot {name!r} has no copy of {inst.name}'s queue")
            restore_queue(copy, inst.queue)
        return f"restored snapshot {name!r} to {len(chosen)} queue file(s)"

    def _select(self, index: Any) -> list[_Instance]:
        if index is None:
            return self._instances
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self._instances):
            last = len(self._instances) - 1
            raise UserError(f"reference target: instance must be 0..{last}, got {index!r}")
        return [self._instances[index]]

    def _act_one(self, inst: _Instance, action: str) -> str:
        name = inst.name
        if action == "kill":
            pid = inst.signal(signal.SIGKILL, action)
            inst.proc.wait(self.spec.stop_timeout_s)
            return f"{name}: SIGKILL to pid {pid}"
        if action in ("pause", "sigstop"):
            return f"{name}: SIGSTOP to pid {inst.signal(signal.SIGSTOP, action)}"
        if action in ("resume", "sigcont"):
            return f"{name}: SIGCONT to pid {inst.signal(signal.SIGCONT, action)}"
        if action == "stop":
            inst.terminate(graceful=True, timeout=self.spec.stop_timeout_s)
            return f"{name}: stopped (SIGTERM)"
        if action == "start" and inst.alive():
            return f"{name}: already running (pid {inst.proc.pid})"
        inst.terminate(graceful=True, timeout=self.spec.stop_timeout_s)  # restart; no-op for start
        pid = inst.spawn(self._argv[inst.index], self._env, self.spec.ready_timeout_s)
        return f"{name}: {'started' if action == 'start' else 'restarted'} (pid {pid}), queue resumed"


def snapshot_queue(queue: Path, copy: Path) -> None:
    """Copy a queue file with SQLite's online backup API: one consistent state of it (as of the copy's
    start), also while the pipeline writes to it; an instance that never started leaves an empty copy."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    dst = sqlite3.connect(copy)
    try:
        if queue.exists():
            src = sqlite3.connect(f"file:{queue}?mode=ro", uri=True, timeout=10.0)
            try:
                src.backup(dst)
            finally:
                src.close()
    finally:
        dst.close()


def restore_queue(copy: Path, queue: Path) -> None:
    """Put a snapshot's copy in place of a (stopped) pipeline's queue file."""
    remove_queue(queue)
    shutil.copyfile(copy, queue)


def remove_queue(queue: Path) -> None:
    """Delete a queue file and its WAL and shared-memory files (what a lost disk takes)."""
    for suffix in ("", "-wal", "-shm"):
        queue.with_name(queue.name + suffix).unlink(missing_ok=True)
