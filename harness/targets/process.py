"""The ``process`` target: a command mailstorm starts (its own process group), made ready by a port or an
HTTP check, and broken on the timeline: kill -9, SIGSTOP/SIGCONT (a stalled host), stop, start, restart.

The command and its environment may name run values as placeholders, substituted at start:
``{port}`` (the SUT's port, chosen free when the spec says 0), ``{host}``, ``{esp_host}``, ``{esp_port}``,
``{esp_http}``, ``{esp_ca}`` (the CA file a SUT must trust when the ESP speaks TLS; empty otherwise),
``{ledger_dir}``, ``{ledger_source}`` (the ledger source to write under: ``sut``, or a pool member's
own), ``{run_dir}``, ``{seed}``, and ``{python}`` (mailstorm's own interpreter), ``{python_prefix}`` (its
installation), ``{python_env}`` (its venv, if any), ``{mailstorm_root}`` (the directory holding
``harness/``). So the reference pipeline, or any relay, can be started pointed at this run's fake ESP.
Output goes to ``<run>/logs/<log_name>.log`` (appended across restarts). Signals go to the whole
group, so a SUT that forks workers is killed/stalled whole.

Backups (mailstorm.harness.snapshots): with ``snapshot_command`` and ``restore_command`` (and
``wipe_command`` for ``wipe``) the target knows ``snapshot``/``restore`` (``params: {name}``) and runs
the user's command for them, with the run placeholders and ``{name}`` (the snapshot's name) and
``{snapshot_dir}`` (``<run>/snapshots/<name>/``: made empty for a snapshot, an existing one for a
restore), in ``cwd`` with the SUT's environment; a non-zero exit fails the action (its output in the log).
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailstorm.deathsig import die_with_parent
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.snapshots import RESTORE, SNAPSHOT, WIPE, fresh_dir, snapshot_name, taken
from mailstorm.harness.targets.base import Address, Endpoint, TargetContext, register
from mailstorm.netguard import check_address
from mailstorm.ports import free_port, port_open

_PLACEHOLDER = re.compile(
    r"\{(port|host|esp_host|esp_port|esp_http|esp_ca|ledger_dir|ledger_source|run_dir|seed|python|python_prefix"
    r"|python_env|mailstorm_root)\}"
)
MAILSTORM_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or install) holding harness/
# Each action name, with the aliases the timeline's inverse actions use (pause <-> resume, sigstop...).
ACTIONS = frozenset({"kill", "pause", "resume", "sigstop", "sigcont", "stop", "start", "restart"})
_BACKUP_PLACEHOLDER = re.compile(r"\{(name|snapshot_dir)\}")
BACKUP_TIMEOUT_S = 600.0  # a user's copy of a large state may take minutes; never forever


class ProcessSpec(BaseModel):
    """A command mailstorm runs as the SUT."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["process"] = "process"
    command: tuple[str, ...] = Field(min_length=1)
    cwd: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="the SUT's listening port; 0 = a free one ({port})")
    protocol: Literal["smtp", "http"] = "smtp"
    path: str = Field("/", description="http: the path the load posts to")
    ready_url: str | None = Field(None, description="ready when this URL answers 2xx (else: port open)")
    ready_timeout_s: float = Field(30.0, gt=0)
    stop_timeout_s: float = Field(10.0, gt=0, description="SIGTERM grace before SIGKILL")
    log_name: str = Field("sut", pattern=r"^[A-Za-z0-9_.-]+$")
    snapshot_command: tuple[str, ...] | None = Field(
        None, min_length=1, description="copies the SUT's state to {snapshot_dir} (action snapshot)"
    )
    restore_command: tuple[str, ...] | None = Field(
        None, min_length=1, description="puts {snapshot_dir} back as the SUT's state (action restore)"
    )
    wipe_command: tuple[str, ...] | None = Field(
        None, min_length=1, description="throws the SUT's state away, as a dead disk (action wipe)"
    )

    @model_validator(mode="after")
    def _http_path(self) -> ProcessSpec:
        if not self.path.startswith("/"):
            raise ValueError("path must start with '/'")
        if (self.snapshot_command is None) != (self.restore_command is None):
            raise ValueError("snapshot_command and restore_command go together (a backup never restored)")
        return self


def substitute(text: str, values: dict[str, str]) -> str:
    """Replace the run placeholders in ``text`` (mailstorm's own paths are always known)."""
    known = {
        "python": sys.executable,
        "python_prefix": str(Path(sys.base_prefix).resolve()),
        "python_env": str(Path(sys.prefix).resolve()),  # a venv's own directory (= python_prefix without one)
        "mailstorm_root": str(MAILSTORM_ROOT),
        **values,
    }
    return _PLACEHOLDER.sub(lambda m: known[m.group(1)], text)


def wait_ready(check, *, timeout: float, alive, what: str) -> None:
    """Poll ``check()`` until true; HarnessError when ``alive()`` turns false or the timeout passes."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not check():
        if not alive():
            raise HarnessError(f"{what} exited before it was ready")
        if time.monotonic() > deadline:
            raise HarnessError(f"{what} was not ready within {timeout:g} s")
        time.sleep(delay)  # polling interval of a readiness check
        delay = min(delay * 2, 0.2)


def ready_url_address(url: str | None, host: str) -> list[Address]:
    """The host a ``ready_url`` polls, as far as the spec says it (``{host}`` is the spec's host; a host
    that is another run value, ``{esp_host}``, is the run's own fake ESP, checked as ``esp.bind``)."""
    if url is None:
        return []
    name = urlsplit(url.replace("{host}", host)).hostname or ""
    return [] if "{" in name else [Address(name, ("ready_url",))]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


@register
class ProcessTarget:
    """Runs ``spec.command``; ``act`` breaks it; ``stop`` leaves no process of its group behind."""

    spec_model = ProcessSpec

    def __init__(self, spec: ProcessSpec) -> None:
        self.spec = spec
        self._proc: subprocess.Popen | None = None
        self._values: dict[str, str] = {}
        self._log: Path | None = None
        self._paused = False
        self._atexit = False
        self._allow_remote = False

    # -- Target ---------------------------------------------------------------------------------------
    def addresses(self) -> list[Address]:
        return [Address(self.spec.host, ("host",)), *ready_url_address(self.spec.ready_url, self.spec.host)]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        check_address(self.spec.host, allow_remote=ctx.allow_remote, what="process target host")
        self._allow_remote = ctx.allow_remote
        port = self.spec.port or free_port(self.spec.host)
        self._values = {
            "port": str(port),
            "host": self.spec.host,
            "esp_host": ctx.esp_smtp[0],
            "esp_port": str(ctx.esp_smtp[1]),
            "esp_http": ctx.esp_http or "",
            "esp_ca": str(ctx.esp_security.ca) if ctx.esp_security.ca is not None else "",
            # Absolute: the SUT may run in another cwd (spec.cwd) or a container (bind mounts need it).
            "ledger_dir": str(Path(ctx.ledger_dir).resolve()),
            "ledger_source": ctx.ledger_source or "sut",
            "run_dir": str(Path(ctx.run_dir).resolve()),
            "seed": str(ctx.seed),
        }
        self._env = {
            **os.environ,
            **ctx.env,
            **{k: substitute(v, self._values) for k, v in self.spec.env.items()},
        }
        self._log = Path(ctx.run_dir) / "logs" / f"{self.spec.log_name}.log"
        self._log.parent.mkdir(parents=True, exist_ok=True)
        if not self._atexit:
            atexit.register(self.stop)  # a runner that exits without stop() still leaves nothing behind
            self._atexit = True
        self._spawn()
        host = self.spec.host
        if self.spec.protocol == "http":
            return [Endpoint("http", host, port, url=f"http://{host}:{port}{self.spec.path}")]
        return [Endpoint("smtp", host, port)]

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it after ``stop_timeout_s``; idempotent."""
        self._terminate(graceful=True)

    # -- Alive ----------------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- Actionable -----------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        backups = {SNAPSHOT: self.spec.snapshot_command, RESTORE: self.spec.restore_command}
        backups[WIPE] = self.spec.wipe_command
        return ACTIONS | {name for name, command in backups.items() if command is not None}

    def act(self, action: str, **params: Any) -> str:
        known = self.actions()
        if action not in known:
            raise UserError(f"process target: unknown action {action!r}; known: {', '.join(sorted(known))}")
        if action in (SNAPSHOT, RESTORE, WIPE):
            return self._backup(action, params)
        if params:
            raise UserError(f"process target: action {action!r} takes no params, got {sorted(params)}")
        if action == "kill":
            pid = self._signal(signal.SIGKILL, "kill")
            self._proc.wait(self.spec.stop_timeout_s)
            self._paused = False
            return f"SIGKILL to process group {pid}"
        if action in ("pause", "sigstop"):
            pid = self._signal(signal.SIGSTOP, action)
            self._paused = True
            _wait_status(pid, stopped=True)
            return f"SIGSTOP to process group {pid}"
        if action in ("resume", "sigcont"):
            pid = self._signal(signal.SIGCONT, action)
            self._paused = False
            _wait_status(pid, stopped=False)
            return f"SIGCONT to process group {pid}"
        if action == "stop":
            self._terminate(graceful=True)
            return "stopped (SIGTERM)"
        if action == "start":
            if self.alive():
                return f"already running (pid {self.pid})"
            return f"started (pid {self._spawn()})"
        self._terminate(graceful=True)  # restart
        return f"restarted (pid {self._spawn()})"

    def _backup(self, action: str, params: dict[str, Any]) -> str:
        """Run the user's command for a backup action (see the module docstring)."""
        extra = set(params) - ({"name"} if action != WIPE else set())
        if extra:
            raise UserError(f"process target: action {action!r} does not take {sorted(extra)}")
        run_dir = Path(self._values["run_dir"])
        name = snapshot_name("process", action, params) if action != WIPE else ""
        where = ""
        if action == SNAPSHOT:
            where = str(fresh_dir(run_dir, name))
        elif action == RESTORE:
            where = str(taken(run_dir, "process", name))
        spec = {SNAPSHOT: self.spec.snapshot_command, RESTORE: self.spec.restore_command}
        template = spec.get(action, self.spec.wipe_command)
        own = {"name": name, "snapshot_dir": where}
        command = [
            substitute(_BACKUP_PLACEHOLDER.sub(lambda m: own[m.group(1)], part), self._values)
            for part in template
        ]
        cwd = self.spec.cwd and substitute(self.spec.cwd, self._values)
        assert self._log is not None, "start() first"
        with self._log.open("ab") as log:
            try:
                done = subprocess.run(
                    command, cwd=cwd, env=self._env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, timeout=BACKUP_TIMEOUT_S, check=False,
                )  # fmt: skip
            except OSError as exc:
                raise UserError(f"process target: cannot run {command[0]!r}: {exc.strerror}") from None
            except subprocess.TimeoutExpired:
                raise HarnessError(
                    f"process target: {action}_command ran past {BACKUP_TIMEOUT_S:g} s"
                ) from None
        if done.returncode != 0:
            raise HarnessError(f"process target: {action}_command exited {done.returncode} (log {self._log})")
        return f"{action}{f' {name!r}' if name else ''}: {command[0]} exited 0"

    # -- internals ------------------------------------------------------------------------------------
    def _spawn(self) -> int:
        command = [substitute(part, self._values) for part in self.spec.command]
        cwd = self.spec.cwd and substitute(self.spec.cwd, self._values)
        assert self._log is not None, "start() first"
        if self.spec.ready_url:  # polled from here: its host must pass the guard with its run values in
            host = urlsplit(substitute(self.spec.ready_url, self._values)).hostname or ""
            check_address(host, allow_remote=self._allow_remote, what="process target ready_url")
        with self._log.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: signals reach the SUT's children too
                    **die_with_parent(),  # a runner killed with -9 takes the SUT along
                )
            except OSError as exc:
                raise UserError(f"process target: cannot run {command[0]!r}: {exc.strerror}") from None
        self._paused = False
        what = f"process target {command[0]!r} (log {self._log})"
        try:
            if self.spec.ready_url:
                url = substitute(self.spec.ready_url, self._values)
                wait_ready(
                    lambda: http_ok(url), timeout=self.spec.ready_timeout_s, alive=self.alive, what=what
                )
            else:
                port = int(self._values["port"])
                wait_ready(
                    lambda: port_open(self.spec.host, port),
                    timeout=self.spec.ready_timeout_s,
                    alive=self.alive,
                    what=what,
                )
        except HarnessError:
            self._terminate(graceful=False)
            raise
        return self._proc.pid

    def _signal(self, sig: signal.Signals, action: str) -> int:
        if not self.alive():
            raise HarnessError(f"process target: cannot {action}: the process is not running")
        os.killpg(self._proc.pid, sig)
        return self._proc.pid

    def _terminate(self, *, graceful: bool) -> None:
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid  # the leader's pid is the group id (start_new_session)
        if graceful and proc.poll() is None:
            _killpg(pgid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            _killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(self.spec.stop_timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (the leader, or children that outlived it) goes now.
        _killpg(pgid, signal.SIGKILL)
        proc.wait()
        wait_group_gone(pgid, timeout=self.spec.stop_timeout_s)
        self._paused = False


def _wait_status(pid: int, *, stopped: bool, timeout: float = 5.0) -> None:
    """Signals arrive asynchronously: return once the leader is (no longer) in the stopped state, so the
    timeline's record of the action is not earlier than its effect."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (psutil.Process(pid).status() == psutil.STATUS_STOPPED) == stopped:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.005)
    raise HarnessError(f"process {pid} did not {'stop' if stopped else 'continue'} within {timeout:g} s")


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of process group ``pgid`` (zombies count as gone)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return out


def wait_group_gone(pgid: int, *, timeout: float) -> None:
    """SIGKILL is asynchronous: return once no process of the group is left; HarnessError otherwise."""
    deadline = time.monotonic() + timeout
    while members := group_members(pgid):
        if time.monotonic() > deadline:
            pids = ", ".join(str(p.pid) for p in members)
            raise HarnessError(f"process group {pgid} still has processes after SIGKILL: {pids}")
        time.sleep(0.01)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
