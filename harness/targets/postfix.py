"""The ``postfix`` target: a throwaway instance of the system's Postfix as the SUT, relaying to the fake ESP.

The instance's config (copied from /etc/postfix) and ``maillog`` live under ``<run>/postfix/``; it
listens on a loopback port, relays everything to the ESP (``relayhost = [host]:port``) and uses no
chroot, no syslog and no DNS: the working set-up of notes/postfix-sut.md, traps included (the dangling
``makedefs.out`` symlink, the data directory owned by postfix, ``script`` to see why ``postfix start``
failed silently). Its queue and data directories ("spool") are a short private directory in /tmp,
linked as ``<run>/postfix/spool`` and removed by ``stop()``: Postfix's UNIX sockets live in the queue
directory and a socket path may not exceed 108 bytes (a run directory easily does), and the master
opens its lock in the data directory as the postfix user, who must be able to reach it (a 0700 parent,
as pytest's tmp dirs, forbids that). Retry timing is the spec's (Postfix's own defaults, 300 s/4000 s,
make recovery take minutes; a user may want exactly that).

Relaying to an ESP that requires TLS and AUTH, configured as a production relay to SES is: ``relay_tls``
is ``smtp_tls_security_level`` (none | may | encrypt | verify | secure) with the run's CA as
``smtp_tls_CAfile`` (``verify``/``secure`` match the certificate against the ESP's hostname), and
``smtp_tls_wrappermode`` when the ESP speaks implicit TLS; ``relay_auth`` turns on the SASL client
(``true``: the ESP's first credential; ``"USER:PASSWORD"``: those) with the password in a
``texthash:`` map readable by root only. Postfix defers on a TLS or AUTH failure and logs why in its
maillog ("TLS is required, but was not offered", "SASL authentication failed", "certificate verification
failed"). Needs Debian's libsasl2-modules (PLAIN and LOGIN for the SASL client).

Several ESPs (``esps:``): the first is the ``relayhost`` and the others ``smtp_fallback_relay``, in
order. Postfix tries a fallback within the same delivery when the relayhost fails with a non-permanent
error (connection refused or timed out, a 4yz), and tries the relayhost first on every delivery: its
failover costs one failed connection per delivery, its failback needs no probe.

Queue depth: ``postqueue -c CONF -j`` (one JSON line per queued message), sampled every
``queue_sample_s`` onto the ledger as ``sut.queue`` records (source ``postfix``); the same listing,
its queue ids mapped to correlation ids through the maillog, is what the instance still holds
(``held_ids``, asked at the end of the drain); with
``follow_maillog`` the maillog becomes ``sut.accepted/relayed/deferred/bounced`` records too
(``postfix_maillog``). Actions: ``stop`` (postfix
stop), ``start``, ``restart``, ``kill`` (SIGKILL to the master; its children exit by themselves),
``flush`` (``postqueue -f``: retry now, revive a destination marked dead); backups
(mailstorm.harness.snapshots): ``snapshot`` (``params: {name}``) stops a running instance, copies its
queue directories (``cp -a``: Postfix's owners and modes kept) to ``<run>/snapshots/<name>/`` and starts
it again; ``restore`` (on a stopped or killed instance) replaces them with the copy and renames the queue
files after their new inodes (``postsuper -s``, as Postfix's manual says for a queue restored from
backup: restored messages get new queue ids, which the maillog has not tied to their correlation ids;
the ESP's records still carry them); ``wipe`` empties them. ``stop()`` leaves no process
of *this* instance: after ``postfix stop`` it SIGKILLs whatever still runs with this instance's
``MAIL_CONFIG`` (Postfix sets it for the master and every daemon), never anything found by name.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import psutil
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailstorm.errors import ConfigError, HarnessError, UserError
from mailstorm.harness.snapshots import (
    BACKUP_ACTIONS,
    RESTORE,
    SNAPSHOT,
    fresh_dir,
    snapshot_name,
    taken,
)
from mailstorm.harness.targets.base import Address, Endpoint, HeldQueue, TargetContext, register
from mailstorm.harness.targets.postfix_conf import LISTEN_HOST, main_cf
from mailstorm.harness.targets.postfix_maillog import HEADER_CHECK, MaillogFollower, correlation_ids
from mailstorm.harness.targets.process import wait_ready
from mailstorm.ledger import LedgerWriter, SutQueue
from mailstorm.netguard import check_address
from mailstorm.ports import free_port, port_open

ACTIONS = frozenset({"stop", "start", "restart", "kill", "flush"}) | BACKUP_ACTIONS
# The queue directories that hold messages and their logs (the rest are sockets and the pid file).
QUEUES = (
    "maildrop",
    "incoming",
    "active",
    "deferred",
    "hold",
    "corrupt",
    "defer",
    "bounce",
    "trace",
    "flush",
)
CMD_TIMEOUT_S = 60.0


class PostfixSpec(BaseModel):
    """A Postfix instance mailstorm starts; times are whole seconds (Postfix time units)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["postfix"] = "postfix"
    port: int = Field(0, ge=0, le=65535, description="SMTP listener on 127.0.0.1; 0 = a free port")
    minimal_backoff_s: int = Field(1, ge=1, description="Postfix minimal_backoff_time (default 300)")
    maximal_backoff_s: int = Field(2, ge=1, description="Postfix maximal_backoff_time (default 4000)")
    queue_run_delay_s: int = Field(1, ge=1, description="Postfix queue_run_delay (default 300)")
    smtp_connect_timeout_s: int = Field(5, ge=1)
    destination_concurrency: int = Field(20, ge=1, description="smtp_destination_concurrency_limit")
    main_cf: dict[str, str] = Field(default_factory=dict, description="more main.cf settings, applied last")
    config_template: str = Field("/etc/postfix", description="the configuration copied for the instance")
    ready_timeout_s: float = Field(20.0, gt=0)
    queue_sample_s: float = Field(
        1.0, ge=0, description="write the queue depth (sut.queue) this often; 0 = never"
    )
    follow_maillog: bool = Field(
        True, description="write sut.accepted/relayed/deferred/bounced records from the maillog"
    )
    relay_tls: Literal["none", "may", "encrypt", "verify", "secure"] = Field(
        "none", description="smtp_tls_security_level towards the ESP (the run's CA is smtp_tls_CAfile)"
    )
    relay_auth: bool | str = Field(
        False, description="SASL towards the ESP: true = the ESP's first credential, or 'USER:PASSWORD'"
    )

    @model_validator(mode="after")
    def _auth_text(self) -> PostfixSpec:
        if isinstance(self.relay_auth, str) and not re.fullmatch(r"[^:\s]+:\S+", self.relay_auth):
            raise ValueError("relay_auth: true, false or 'USER:PASSWORD'")
        return self

    @model_validator(mode="after")
    def _backoff_order(self) -> PostfixSpec:
        if self.maximal_backoff_s < self.minimal_backoff_s:
            raise ValueError("maximal_backoff_s must be >= minimal_backoff_s")
        return self


def postfix_installed() -> str | None:
    """The ``postfix`` binary, or None when Postfix is not installed."""
    return shutil.which("postfix", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


@register
class PostfixTarget:
    """Starts, breaks and removes one throwaway Postfix instance."""

    spec_model = PostfixSpec

    def __init__(self, spec: PostfixSpec) -> None:
        self.spec = spec
        self.root: Path | None = None
        self.port = 0
        self._atexit = False
        self._sampler: threading.Thread | None = None
        self._writer: LedgerWriter | None = None
        self._follower: MaillogFollower | None = None
        self._sampling = threading.Event()

    # -- paths ----------------------------------------------------------------------------------------
    @property
    def conf_dir(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "conf"

    @property
    def spool_link(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "spool"

    @property
    def queue_dir(self) -> Path:
        return self.spool_link.resolve() / "queue"

    @property
    def maillog(self) -> Path:
        assert self.root is not None, "start() first"
        return self.root / "maillog"

    # -- Target ---------------------------------------------------------------------------------------
    def addresses(self) -> list[Address]:
        """The instance listens on loopback (it relays to the run's own fake ESP)."""
        return [Address(LISTEN_HOST)]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        binary = postfix_installed()
        if binary is None:
            raise UserError("target postfix: Postfix is not installed (apt-get install postfix)")
        self._sbin = Path(binary).parent
        esp_host, esp_port = ctx.esp_smtp
        check_address(esp_host, allow_remote=ctx.allow_remote, what="postfix relayhost")
        self.root = (Path(ctx.run_dir) / "postfix").resolve()
        self.port = self.spec.port or free_port()
        self._configure(esp_host, esp_port, ctx)
        if not self._atexit:
            atexit.register(self.stop)  # an interrupted runner still leaves no Postfix behind
            self._atexit = True
        self._writer = LedgerWriter(ctx.ledger_dir, ctx.ledger_source or "postfix")
        if self.spec.follow_maillog:
            self._follower = MaillogFollower(self.maillog, self._writer).start()
        self._start()
        if self.spec.queue_sample_s > 0:
            self._start_sampler()
        return [Endpoint("smtp", LISTEN_HOST, self.port)]

    def stop(self) -> None:
        """``postfix stop``, then SIGKILL to anything of this instance still running; idempotent."""
        self._stop_sampler()
        if self.root is None or not self.conf_dir.exists():
            return
        self._halt()
        if self._follower is not None:  # after the halt: it reads the last lines Postfix logged
            self._follower.stop()
            self._follower = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.spool_link.is_symlink():  # the private queue/data directory goes with the instance
            shutil.rmtree(self.spool_link.resolve(), ignore_errors=True)
            self.spool_link.unlink()

    # -- Alive / QueueSampler / QueueLister ---------------------------------------------------------
    def alive(self) -> bool:
        return self.master_pid() is not None

    def queue_depth(self) -> int | None:
        """Messages in the instance's queues (incoming, active, deferred, hold); None when unreadable. An
        empty listing is read again (``_queue_ids`` says why): the drain ends on an empty queue."""
        queue = self._postqueue()
        if queue == []:
            queue = self._postqueue()
        return None if queue is None else len(queue)

    def held_ids(self) -> HeldQueue | None:
        """Every queued message by correlation id: ``postqueue -j``'s queue ids, mapped through the
        header_checks lines of the maillog (the follower's map; the file itself for what it has not read
        yet). A queued message the maillog does not name is left out, and the listing is then not
        complete: it may be one of the run's under a new queue id (``postsuper -s`` renames the files
        a restore puts back), or not one of the run's at all; which, Postfix cannot say."""
        qids = self._queue_ids()
        if qids is None:
            return None
        known = self._follower.ids() if self._follower is not None else {}
        if any(q not in known for q in qids):
            known = {**correlation_ids(self.maillog), **known}
        return HeldQueue({known[q]: q for q in qids if q in known}, complete=all(q in known for q in qids))

    def _queue_ids(self) -> list[str] | None:
        """The queue ids of two listings in a row, merged. One listing can miss a message: showq reads
        incoming, then active, then deferred, so a message a queue run moves deferred -> active, or that
        qmgr puts back active -> incoming (a file its delivery agent still holds locked), while showq
        reads is in none of them; the second listing finds it where it went."""
        first, second = self._postqueue(), self._postqueue()
        if first is None or second is None:
            return None
        qids = (entry.get("queue_id") for entry in (*first, *second))
        return list(dict.fromkeys(q for q in qids if isinstance(q, str)))

    def _postqueue(self) -> list[dict[str, Any]] | None:
        """``postqueue -j``: one JSON object per queued message; None when it cannot be read."""
        if self.root is None:
            return None
        try:
            out = subprocess.run(
                [str(self._sbin / "postqueue"), "-c", str(self.conf_dir), "-j"],
                capture_output=True,
                timeout=CMD_TIMEOUT_S,
                check=True,
            ).stdout
            return [json.loads(line) for line in out.splitlines() if line.strip()]
        except (subprocess.SubprocessError, OSError, ValueError):
            return None

    def _start_sampler(self) -> None:
        """Postfix has no ledger of its own: a thread writes its sampled queue depth onto the run's ledger
        (source ``postfix``), as the reference pipeline does for its queue."""
        writer = self._writer
        assert writer is not None
        self._sampling.clear()

        def sample() -> None:
            while not self._sampling.is_set():
                depth = self.queue_depth()
                if depth is not None:
                    writer.write(SutQueue(depth=depth))
                self._sampling.wait(self.spec.queue_sample_s)

        self._sampler = threading.Thread(target=sample, name="postfix-queue", daemon=True)
        self._sampler.start()

    def _stop_sampler(self) -> None:
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(CMD_TIMEOUT_S)
            self._sampler = None

    # -- Actionable -----------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        return ACTIONS

    def act(self, action: str, **params: Any) -> str:
        if action not in ACTIONS:
            raise UserError(f"postfix target: unknown action {action!r}; known: {', '.join(sorted(ACTIONS))}")
        takes = {"name"} if action in (SNAPSHOT, RESTORE) else set()
        if set(params) - takes:
            raise UserError(f"postfix target: action {action!r} does not take {sorted(set(params) - takes)}")
        if action in BACKUP_ACTIONS:
            return self._backup(action, params)
        if action == "kill":
            pid = self.master_pid()
            if pid is None:
                raise HarnessError("postfix target: cannot kill: the master is not running")
            os.kill(pid, signal.SIGKILL)
            _wait_gone([psutil.Process(pid)], timeout=10)
            return f"SIGKILL to postfix master {pid}"
        if action == "flush":
            self._run([str(self._sbin / "postqueue"), "-c", str(self.conf_dir), "-f"])
            return "postqueue -f"
        if action == "stop":
            self._halt()
            return "postfix stop"
        if action == "start":
            if self.alive():
                return f"already running (master {self.master_pid()})"
            self._start()
            return f"started (master {self.master_pid()})"
        self._halt()  # restart: a clean start also after a kill (leftover children would hold the port)
        self._start()
        return f"restarted (master {self.master_pid()})"

    def _backup(self, action: str, params: dict[str, Any]) -> str:
        assert self.root is not None, "start() first"
        run_dir = self.root.parent
        if action == SNAPSHOT:
            name = snapshot_name("postfix", action, params)
            where = fresh_dir(run_dir, name)
            running = self.alive()
            if running:
                self._halt()  # a copy of a queue Postfix is writing to is no consistent state
            try:
                for queue in QUEUES:
                    if (self.queue_dir / queue).is_dir():
                        self._run(["cp", "-a", str(self.queue_dir / queue), str(where / queue)])
            finally:
                if running:
                    self._start()
            again = ", started again" if running else ""
            return f"snapshot {name!r}: stopped, copied the queue to {where}{again}"
        if self.alive():
            raise HarnessError(f"postfix target: cannot {action}: Postfix is running (stop or kill it first)")
        self._kill_leftovers()
        where = (
            taken(run_dir, "postfix", snapshot_name("postfix", action, params)) if action == RESTORE else None
        )
        for queue in QUEUES:
            here = self.queue_dir / queue
            if here.is_dir():  # emptied, kept: Postfix wants its directories with their owners
                for entry in here.iterdir():
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            if where is not None and (where / queue).is_dir():
                self._run(["cp", "-a", f"{where / queue}/.", str(here)])
        if where is None:
            return "wiped the queue"
        # Queue file names carry the inode number and files copied back have new ones: postsuper -s
        # renames them. Stopped, Postfix programs open the maillog themselves, as the postfix user, who
        # may not write it: this one logs to syslog instead (postfix start would run it and fail so).
        postconf = [str(self._sbin / "postconf"), "-c", str(self.conf_dir), "-e"]
        self._run([*postconf, "maillog_file ="])
        try:
            self._run([str(self._sbin / "postsuper"), "-c", str(self.conf_dir), "-s"])
        finally:
            self._run([*postconf, f"maillog_file = {self.maillog}"])
        return f"restored snapshot {where.name!r} to the queue (postsuper -s)"

    # -- internals ------------------------------------------------------------------------------------
    def master_pid(self) -> int | None:
        """The master's pid from this instance's pid file, when that process is alive and ours."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().strip())
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and self._is_ours(proc):
                return pid
        except (OSError, ValueError, psutil.Error):
            pass
        return None

    def _is_ours(self, proc: psutil.Process) -> bool:
        try:
            return proc.environ().get("MAIL_CONFIG") == str(self.conf_dir)
        except psutil.Error:
            return False

    def _instance_processes(self) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and self._is_ours(proc):
                    found.append(proc)
            except psutil.Error:
                continue
        return found

    def _halt(self) -> None:
        """Stop every process of the instance (its files stay for a later start)."""
        if self.master_pid() is not None:
            self._postfix("stop", check=False)
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        procs = self._instance_processes()
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass
        _wait_gone(procs, timeout=10)

    def _configure(self, esp_host: str, esp_port: int, ctx: TargetContext) -> None:
        root, conf = self.root, self.conf_dir
        assert root is not None
        if not conf.exists():
            template = Path(self.spec.config_template)
            if not (template / "main.cf").is_file():
                raise ConfigError(f"target postfix: config_template {template} has no main.cf")
            root.mkdir(parents=True, exist_ok=True)
            shutil.copytree(template, conf, symlinks=True)
            # A symlink that leaves the directory: set-permissions refuses it.
            (conf / "makedefs.out").unlink(missing_ok=True)
        spool = self._spool()
        data_dir = spool / "data"
        for d in (spool / "queue", data_dir):
            d.mkdir(exist_ok=True)
        # master.lock lives in data_directory and is opened as postfix: "Permission denied" otherwise.
        shutil.chown(data_dir, "postfix", "postfix")
        (conf / "mailstorm_header_checks").write_text(HEADER_CHECK)
        settings = main_cf(
            self.spec,
            conf=conf,
            queue_dir=self.queue_dir,
            data_dir=data_dir,
            maillog=self.maillog,
            relayhost=(esp_host, esp_port),
            ctx=ctx,
        )
        postconf = str(self._sbin / "postconf")
        self._run([postconf, "-c", str(conf), "-e", *(f"{k} = {v}" for k, v in settings.items())])
        listener = f"smtp/inet={LISTEN_HOST}:{self.port} inet n - n - - smtpd"
        self._run([postconf, "-c", str(conf), "-M", "-e", listener])
        self._run([postconf, "-c", str(conf), "-F", "-e", "*/*/chroot = n"])
        self._postfix("set-permissions")

    def _spool(self) -> Path:
        """The instance's private queue/data directory (see the module docstring), made once per run."""
        if self.spool_link.is_symlink() and self.spool_link.resolve().is_dir():
            return self.spool_link.resolve()
        self.spool_link.unlink(missing_ok=True)  # a link left dangling by an interrupted earlier run
        spool = Path(tempfile.mkdtemp(prefix="mailstorm-pf-", dir="/tmp"))
        spool.chmod(0o755)  # the postfix user must reach data/ inside it
        self.spool_link.symlink_to(spool)  # so the run directory says where the queue is
        return spool

    def _start(self) -> None:
        self._postfix("start")
        try:
            wait_ready(
                lambda: port_open(LISTEN_HOST, self.port),
                timeout=self.spec.ready_timeout_s,
                alive=self.alive,
                what=f"postfix (log {self.maillog})",
            )
        except HarnessError:
            self._halt()
            raise

    def _postfix(self, command: str, *, check: bool = True) -> None:
        # `postfix start` prints nothing and exits 1 when there is no syslog: run under `script` (a pty)
        # so its fatal line reaches us.
        line = shlex.join([str(self._sbin / "postfix"), "-c", str(self.conf_dir), command])
        proc = subprocess.run(
            ["script", "-q", "-e", "-c", line, "/dev/null"],
            capture_output=True,
            text=True,
            timeout=CMD_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            out = " ".join((proc.stdout + proc.stderr).split()) or f"exit {proc.returncode}"
            raise HarnessError(f"postfix target: postfix {command} failed: {out}")

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
        if proc.returncode != 0:
            out = " ".join((proc.stderr or proc.stdout).split()) or f"exit {proc.returncode}"
            raise HarnessError(f"postfix target: {Path(argv[0]).name} failed: {out}")


def _wait_gone(procs: list[psutil.Process], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for proc in procs:
        while True:
            try:
                if proc.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"postfix target: process {proc.pid} did not exit")
            time.sleep(0.01)
