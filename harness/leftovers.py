"""What runs left running, found by their run directory and ended: never anything found by a program's name.

A run marks everything it starts with its run directory (absolute): its processes carry
``MAILSTORM_RUN_DIR=<run dir>`` in their environment (and pass it to their own children), a Postfix
instance's processes ``MAIL_CONFIG=<run dir>/postfix/conf``, containers the label
``mailstorm.instance=<run dir>``; a Postfix instance's private spool is linked as
``<run dir>/postfix/spool``. mailstorm's own processes also name the run directory in their command line
(``--ledger <run dir>/ledger``), which finds one started without the mark (an older version, a fake ESP
a user pointed at a run directory).

A runner holds ``<run dir>/runner.lock`` (flock) for as long as it lives, and the kernel drops the lock
when it dies, however: ``find`` skips the runs whose runner still holds it, so ``mailstorm cleanup`` never
ends the parts of a live run. The watchdog (``mailstorm.harness.watchdog``) and ``mailstorm cleanup`` both
use ``find`` then ``end``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

RUN_DIR_ENV = "MAILSTORM_RUN_DIR"
CONTAINER_LABEL = "mailstorm.instance"  # the docker target labels its containers with it
LOCK_NAME = "runner.lock"
SPOOL_PREFIX = "mailstorm-pf-"  # the Postfix target's private spool directories in /tmp
GRACE_S = 3.0  # SIGTERM first (a part closes its ledger); SIGKILL for what still runs after this
_MAILSTORM_MODULE = "mailstorm."  # ``python -m mailstorm.fake_esp`` and the like
_LOCUSTFILE = os.path.join("scenarios", "locustfile.py")


class RunnerLock:
    """The lock a runner holds on its run directory while it lives (released by the kernel at its end)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunnerLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (O_CLOEXEC)
        with contextlib.suppress(OSError):  # a file system without flock: the run goes on (see runner_alive)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def runner_alive(run_dir: Path) -> bool:
    """True while the runner of ``run_dir`` lives (it holds the lock); False for a run without a lock."""
    try:
        fd = os.open(run_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:  # held; or a file system without flock, where a live run cannot be told: leave it
        return True
    finally:
        os.close(fd)  # also drops our shared lock, if we got it
    return False


@dataclass
class Leftovers:
    """What ``find`` found, by kind; ``skipped``: runs whose runner still lives (nothing of them is here)."""

    processes: list[tuple[Path, psutil.Process, str]] = field(default_factory=list)  # run, process, argv
    postfix: dict[Path, list[psutil.Process]] = field(default_factory=dict)  # config dir -> its processes
    containers: list[tuple[Path, Any]] = field(default_factory=list)  # run, docker container
    spools: list[tuple[Path, Path]] = field(default_factory=list)  # run, the spool's link in the run dir
    skipped: set[Path] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.processes or self.postfix or self.containers or self.spools)


def run_of(path: str | os.PathLike[str], out: Path) -> Path | None:
    """The run directory (``out/<name>``) that ``path`` is or is inside, or None when it is not under
    ``out``. ``out`` is a real path (symbolic links resolved, as ``find`` makes it); ``path`` absolute.
    Comparing real paths matters: the Postfix and docker targets resolve the run directory."""
    p = Path(os.path.realpath(path))
    try:
        rel = p.relative_to(out)
    except ValueError:
        return None
    return out / rel.parts[0] if rel.parts else None


def find(out: Path, *, only: Path | None = None, check_live: bool = True) -> Leftovers:
    """Everything of the runs under ``out`` (or only of the run ``only``) still running.

    ``check_live``: skip runs whose runner holds its lock (the watchdog, which knows its runner is dead,
    does not wait for the kernel to drop the lock)."""
    out = Path(os.path.realpath(out))
    only = Path(os.path.realpath(only)) if only is not None else None
    found = Leftovers()
    live: dict[Path, bool] = {}

    def wanted(run: Path | None) -> bool:
        if run is None or (only is not None and run != only):
            return False
        if not check_live:
            return True
        if run not in live:
            live[run] = runner_alive(run)
            if live[run]:
                found.skipped.add(run)
        return not live[run]

    spare = {os.getpid(), *(p.pid for p in _ancestors())}
    for proc in psutil.process_iter():
        if proc.pid in spare:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            try:
                env = proc.environ()
            except psutil.AccessDenied:  # another user's: its command line may still name a run
                env = {}
            conf = env.get("MAIL_CONFIG")
            if conf and wanted(run_of(conf, out)):
                found.postfix.setdefault(Path(conf), []).append(proc)
                continue
            argv = proc.cmdline()
            run = run_of(env[RUN_DIR_ENV], out) if RUN_DIR_ENV in env else _named_run(proc, argv, out)
            if wanted(run):
                found.processes.append((run, proc, " ".join(argv)))
        except (psutil.Error, OSError):
            continue  # gone meanwhile, or not ours to read
    for run, container in _containers(out):
        if wanted(run):
            found.containers.append((run, container))
    if only is not None:
        runs = [only]
    else:
        runs = sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    for run in runs:
        link = run / "postfix" / "spool"
        if link.is_symlink() and Path(os.readlink(link)).name.startswith(SPOOL_PREFIX) and wanted(run):
            found.spools.append((run, link))
    return found


def _ancestors() -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process().parents()
    return []


def _named_run(proc: psutil.Process, argv: list[str], out: Path) -> Path | None:
    """The run a mailstorm process names in its command line (a relative path is its cwd's)."""
    if not any(a.startswith(_MAILSTORM_MODULE) or a.endswith(_LOCUSTFILE) for a in argv):
        return None
    cwd: str | None = None
    for arg in argv[1:]:
        if os.sep not in arg:
            continue
        if not os.path.isabs(arg):
            cwd = cwd if cwd is not None else proc.cwd()
            arg = os.path.join(cwd, arg)
        if (run := run_of(arg, out)) is not None:
            return run
    return None


def dockerd_down() -> str | None:
    """Why dockerd's unix socket (DOCKER_HOST's, else the default) takes no connection; None when it does
    or when DOCKER_HOST is not a unix socket. Asked before the SDK is: a docker SDK that cannot connect
    while it fetches the API version drops its socket unclosed (a ResourceWarning at a later GC)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return None
    path = host[len("unix://") :]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(path)
    except OSError as exc:
        return f"{path}: {exc.strerror or exc}"
    return None


def _containers(out: Path) -> list[tuple[Path, Any]]:
    """Containers labelled with a run under ``out``; none when docker is not installed or not running
    (then no container of ours can be running either)."""
    try:
        import docker  # only when there may be containers: the SDK is an optional dependency
    except ImportError:
        return []
    if dockerd_down() is not None:
        return []
    try:
        client = docker.from_env(timeout=10)
        containers = client.containers.list(all=True, filters={"label": CONTAINER_LABEL})
    except Exception:  # no dockerd (connection refused, no socket): nothing of ours runs there
        return []
    found = []
    for c in containers:
        label = c.labels.get(CONTAINER_LABEL, "")
        run = run_of(label, out) if os.path.isabs(label) else None
        if run is not None:
            found.append((run, c))
    return found


def end(found: Leftovers, *, grace_s: float = GRACE_S) -> list[str]:
    """End everything in ``found``: processes SIGTERM, then SIGKILL after ``grace_s`` (at once, not one
    after another, so the whole takes about ``grace_s``); containers removed; spools deleted. Returns one
    line per thing ended."""
    lines: list[str] = []
    procs = [p for _, p, _ in found.processes] + [p for group in found.postfix.values() for p in group]
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    for run, proc, argv in found.processes:
        lines.append(f"ended process {proc.pid} of {show(run)}: {_short(argv)}")
    for conf, group in found.postfix.items():
        pids = ", ".join(str(p.pid) for p in group)
        lines.append(f"ended Postfix instance {show(conf)}: {len(group)} process(es) ({pids})")
    for run, container in found.containers:
        with contextlib.suppress(Exception):  # removed meanwhile (its target's stop, another cleanup)
            container.remove(force=True)
            lines.append(f"removed container {container.short_id} ({container.name}) of {show(run)}")
    for run, link in found.spools:
        spool = Path(os.readlink(link))
        shutil.rmtree(spool, ignore_errors=True)
        link.unlink(missing_ok=True)
        lines.append(f"removed Postfix spool {spool} of {show(run)}")
    return lines


def show(path: Path) -> str:
    """A path as the user likely named it: relative to the working directory when under it."""
    rel = os.path.relpath(path)
    return path.as_posix() if rel.startswith("..") else rel


def _short(argv: str, limit: int = 120) -> str:
    return argv if len(argv) <= limit else argv[: limit - 3] + "..."
