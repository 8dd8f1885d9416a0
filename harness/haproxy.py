"""A real HAProxy (Debian's ``haproxy``) in front of a pool's members: its configuration, its process and
its stats socket.

The configuration is written for the run: one TCP frontend on a loopback port, one backend ``members``
with a server ``mN`` per member, health-checked (``smtp``: HAProxy's ``option smtpchk``, a HELO that
must get a 2xx; ``tcp``: a connect) every ``inter_ms``, taken out after ``fall`` failed checks and put
back after ``rise`` good ones. A connection to a member that refuses it is retried (``retries``) on the
same member, or on another one with ``redispatch``. HAProxy runs in the foreground (``-db``), its own
process, killed with the runner if need be; its admin socket lives in a short private directory in /tmp
(a UNIX socket path may not exceed 108 bytes, a run directory easily does), removed at ``stop``.

``stats()`` reads ``show stat`` from the socket: per member, HAProxy's status (``UP``, ``DOWN``,
``MAINT``, ``UP 1/2`` while checks fail...), the last check's result and the sessions sent to it.
"""

from __future__ import annotations

import csv
import io
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mailstorm.deathsig import die_with_parent
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.descendants import terminate_child
from mailstorm.ports import wait_for_port

BACKEND = "members"
SOCKET_TIMEOUT_S = 1.0  # a paused HAProxy does not answer: the poll gives up, it does not hang


def max_connections() -> int:
    """What HAProxy may accept: two descriptors a connection (client and server side) within our own
    descriptor limit, which it inherits and cannot raise (it refuses to start when maxconn needs more)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, min(20_000, (soft - 64) // 2))


def haproxy_installed(binary: str = "haproxy") -> str | None:
    return shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin") or shutil.which(binary)


@dataclass(frozen=True)
class BalancerConfig:
    listen: tuple[str, int]
    servers: tuple[tuple[str, int], ...]  # member N is server "mN"
    check: str = "smtp"  # smtp | tcp
    inter_ms: int = 200
    fall: int = 2
    rise: int = 2
    retries: int = 3
    redispatch: bool = False
    balance: str = "roundrobin"
    connect_timeout_ms: int = 1000

    def render(self, sock: Path) -> str:
        """The haproxy.cfg text."""
        host, port = self.listen
        check = "    option smtpchk HELO mailstorm.test\n" if self.check == "smtp" else ""
        redispatch = "    option redispatch\n" if self.redispatch else ""
        servers = "".join(f"    server m{n} {h}:{p} check\n" for n, (h, p) in enumerate(self.servers))
        return (
            "global\n"
            f"    stats socket {sock} mode 600 level admin\n"
            f"    maxconn {max_connections()}\n"
            "defaults\n"
            "    mode tcp\n"
            f"    timeout connect {self.connect_timeout_ms}ms\n"
            "    timeout client 300s\n"
            "    timeout server 300s\n"
            f"    retries {self.retries}\n"
            f"frontend smtp\n    bind {host}:{port}\n    default_backend {BACKEND}\n"
            f"backend {BACKEND}\n"
            f"    balance {self.balance}\n"
            f"{check}{redispatch}"
            f"    default-server inter {self.inter_ms}ms fall {self.fall} rise {self.rise}\n"
            f"{servers}"
        )


@dataclass(frozen=True)
class ServerStat:
    member: int
    status: str
    check: str | None
    sessions: int


class Balancer:
    """One HAProxy process for a pool; ``start``/``stop`` and the signals the timeline sends it."""

    def __init__(self, config: BalancerConfig, workdir: Path, log: Path, *, binary: str = "haproxy") -> None:
        self.config = config
        self.workdir = workdir
        self.log = log
        self.binary = binary
        self.proc: subprocess.Popen | None = None
        self._private: Path | None = None

    @property
    def socket_path(self) -> Path:
        if self._private is None:
            self._private = Path(tempfile.mkdtemp(prefix="mailstorm-hap-", dir="/tmp"))
        return self._private / "admin.sock"

    def start(self, timeout: float) -> int:
        path = haproxy_installed(self.binary)
        if path is None:
            raise UserError(
                f"target pool: HAProxy ({self.binary}) is not installed (apt-get install haproxy)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(self.config.render(self.socket_path))
        check = subprocess.run([path, "-c", "-q", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            why = " ".join((check.stderr or check.stdout).split()) or f"exit {check.returncode}"
            raise HarnessError(f"target pool: HAProxy refused its configuration {cfg}: {why}")
        self.socket_path.unlink(missing_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [path, "-db", "-f", str(cfg)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **die_with_parent(),
            )
        host, port = self.config.listen
        try:
            wait_for_port(host, port, timeout, what=f"HAProxy (log {self.log})", alive=self.alive)
        except HarnessError:
            self.terminate(graceful=False)
            raise
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: signal.Signals, action: str) -> int:
        if not self.alive():
            raise HarnessError(f"pool balancer: cannot {action}: HAProxy is not running")
        self.proc.send_signal(sig)
        return self.proc.pid

    def terminate(self, *, graceful: bool, timeout: float = 10.0) -> None:
        terminate_child(self.proc, graceful=graceful, timeout=timeout)

    def close(self) -> None:
        """Stop HAProxy and remove its private directory."""
        self.terminate(graceful=True)
        if self._private is not None:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None

    # -- the stats socket -----------------------------------------------------------------------------
    def command(self, line: str) -> str:
        """One command on the admin socket; its answer. OSError when HAProxy does not answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(SOCKET_TIMEOUT_S)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def stats(self) -> list[ServerStat] | None:
        """Each member's status as HAProxy sees it; None when the socket does not answer."""
        try:
            text = self.command("show stat")
        except OSError:
            return None
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        out = []
        for row in rows:
            name = row.get("svname") or ""
            if row.get("pxname") != BACKEND or not name.startswith("m") or not name[1:].isdigit():
                continue
            sessions = row.get("stot") or "0"
            out.append(
                ServerStat(
                    member=int(name[1:]),
                    status=row.get("status") or "",
                    check=row.get("check_status") or None,
                    sessions=int(sessions) if sessions.isdigit() else 0,
                )
            )
        return out

    def set_server(self, member: int, state: str) -> str:
        """``disable``/``enable`` a member (HAProxy's maintenance mode: no new connection goes to it)."""
        answer = self.command(f"{state} server {BACKEND}/m{member}").strip()
        if answer:
            raise HarnessError(f"pool balancer: {state} server m{member}: {answer}")
        return f"HAProxy: {state} server m{member}"
