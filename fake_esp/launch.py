"""EspProcess: start a fake ESP as a child process (``python -m mailstorm.fake_esp``), know when it is ready.

The runner, the pytest plugin and the benchmarks all start the fake ESP this way, so a SIGKILL of it is
a real crash of a real process. ``start()`` returns once the control API answers and reports every
worker listening; it never sleeps in place of that check.

TLS and AUTH: ``tls="starttls"|"implicit"`` (with ``require_tls``) makes the ESP write its CA to
``ca_path`` before it is ready, and its HTTP APIs https (``http_url``); ``auth`` credentials
("USER:PASSWORD") reach the child in its environment (``MAILSTORM_ESP_AUTH``), never on its command
line, which every local user can read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import yaml

from mailstorm import PYTHON_M
from mailstorm.deathsig import die_with_parent
from mailstorm.errors import HarnessError, MailstormError
from mailstorm.fake_esp.client import ControlClient
from mailstorm.ports import free_port, wait_for_port

AUTH_ENV = "MAILSTORM_ESP_AUTH"  # credentials for the child, one USER:PASSWORD per line


class EspProcess:
    """One fake ESP child process (with ``processes`` SMTP workers behind it)."""

    def __init__(
        self,
        ledger_dir: str | os.PathLike[str],
        *,
        seed: int = 0,
        smtp_port: int | None = None,
        http_port: int | None = None,
        control_port: int | None = None,
        faults: Iterable[Mapping[str, Any]] = (),
        profile: str | None = None,
        processes: int = 1,
        log_path: str | os.PathLike[str] | None = None,
        token: str | None = None,
        max_message_size: int | None = None,
        store_bodies: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 20.0,
        tls: str = "off",
        require_tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        auth: Iterable[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.ledger_dir = Path(ledger_dir)
        self.seed = seed
        self.smtp_host = host  # where it is reached: its --bind (loopback unless a fleet host's)
        self.smtp_port = smtp_port if smtp_port is not None else free_port()
        self.http_port = http_port
        self.control_port = control_port if control_port is not None else free_port()
        self.faults = [dict(f) for f in faults]
        self.profile = profile
        self.processes = processes
        self.log_path = Path(log_path) if log_path is not None else None
        self.token = token
        self.max_message_size = max_message_size
        self.store_bodies = store_bodies
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.tls = tls
        self.require_tls = require_tls
        self.ca_path = Path(tls_ca) if tls_ca is not None else self.ledger_dir / "ca.pem"
        self.auth = list(auth)
        self.control_url = f"http://{host}:{self.control_port}"
        self.control = ControlClient(self.control_url, token=token)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._faults_file: str | None = None

    @property
    def http_url(self) -> str | None:
        scheme = "https" if self.tls != "off" else "http"
        return f"{scheme}://{self.smtp_host}:{self.http_port}" if self.http_port is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self) -> list[str]:
        cmd = [
            sys.executable,
            *PYTHON_M,
            "mailstorm.fake_esp",
            "--smtp-port",
            str(self.smtp_port),
            "--control-port",
            str(self.control_port),
            "--ledger",
            str(self.ledger_dir),
            "--seed",
            str(self.seed),
            "--processes",
            str(self.processes),
        ]
        if self.http_port is not None:
            cmd += ["--http-port", str(self.http_port)]
        if self.profile is not None:
            cmd += ["--profile", self.profile]
        if self.token is not None:
            cmd += ["--token", self.token]
        if self.max_message_size is not None:
            cmd += ["--max-message-size", str(self.max_message_size)]
        if self.store_bodies is not None:
            cmd += ["--store-bodies", str(self.store_bodies)]
        if self._faults_file is not None:
            cmd += ["--faults", self._faults_file]
        if self.tls != "off":
            cmd += ["--tls", self.tls, "--tls-ca", str(self.ca_path)]
            if self.require_tls:
                cmd.append("--require-tls")
        return cmd + self.extra_args

    def start(self) -> EspProcess:
        if self._proc is not None:
            raise HarnessError("fake ESP already started")
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        if self.faults:
            fd, self._faults_file = tempfile.mkstemp(prefix="fake-esp-faults-", suffix=".yaml")
            with os.fdopen(fd, "w") as fh:
                yaml.safe_dump({"faults": self.faults}, fh)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        else:
            self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child; closed in _finish
        # Own session (process group): kill() takes the workers down with the parent in one signal, as
        # a machine-level crash would; they would otherwise exit only when their pipe to it closes.
        env = {**os.environ, AUTH_ENV: "\n".join(self.auth)}  # ours only, not one inherited
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            **die_with_parent(),  # a runner or test killed with -9 takes its fake ESP along
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        wait_for_port(
            self.smtp_host, self.control_port, self.start_timeout, what="fake ESP", alive=self.alive
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if self.control.health().get("ready"):
                    return
            except MailstormError:
                pass
            if not self.alive():
                raise HarnessError(f"fake ESP exited before it was ready: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"fake ESP not ready within {self.start_timeout:g} s: {self._log_tail()}")
            time.sleep(0.02)  # polling interval of the readiness check

    def _log_tail(self) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(max(0, self._log.seek(0, os.SEEK_END) - 600))
            return self._log.read().decode(errors="replace").strip().replace("\n", " | ")
        except (OSError, ValueError):
            return ""

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait (the ESP closes listeners and ledgers); SIGKILL if it does not exit in time."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL: a crash, as the chaos timeline or a durability test wants it."""
        if self._proc is None:
            return None
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)  # the group is ours: started with start_new_session
        except ProcessLookupError:
            pass
        self._proc.wait()
        return self._finish()

    def _finish(self) -> int | None:
        """Release the child (start() may run it again, on the same ports: a restart after a crash)."""
        code = self._proc.returncode if self._proc is not None else None
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._faults_file is not None:
            Path(self._faults_file).unlink(missing_ok=True)
            self._faults_file = None
        return code

    def __enter__(self) -> EspProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
