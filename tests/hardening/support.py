"""Helpers of the hardening tests: the reference pipeline as a real process (SIGKILL and restart on the
same queue), a sampler of a process's peak memory, clean SMTP transactions, and the long-mode switch."""

from __future__ import annotations

import json
import os
import signal
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from mailstorm.ledger import CORRELATION_HEADER
from mailstorm.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
# MAILSTORM_FUZZ_LONG=1 turns the default tests' modest counts into the issue's full ones.
LONG = os.environ.get("MAILSTORM_FUZZ_LONG") == "1"


def message(cid: str, size: int = 600) -> bytes:
    head = f"From: s@sender.test\r\nTo: r@rcpt.test\r\nSubject: {cid}\r\nMessage-ID: <{cid}@client.test>\r\n"
    head += f"{CORRELATION_HEADER}: {cid}\r\n\r\n"
    return (head + ("z" * 70 + "\r\n") * max(1, size // 72)).encode()


def clean_transaction(port: int, cid: str, timeout: float = 10) -> None:
    """One well-behaved client sends one message; raises unless it gets 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as s:
        s.sendmail("s@sender.test", ["r@rcpt.test"], message(cid))


class ReferenceProcess:
    """``python -m mailstorm.harness.reference`` relaying to ``esp_port``; ``kill()`` is SIGKILL, ``start()``
    again
    resumes the same queue on the same port."""

    def __init__(self, workdir: Path, esp_port: int, *, ledger_dir: Path | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.ledger_dir = ledger_dir or workdir / "ledger"
        self.esp_port = esp_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mailstorm.harness.reference", "--listen", f"127.0.0.1:{self.port}",
            "--queue", str(self.workdir / "queue.sqlite"), "--relay", f"smtp://127.0.0.1:{self.esp_port}",
            "--ledger", str(self.ledger_dir), "--backoff-base", "0.05", "--backoff-max", "0.5",
            "--concurrency", "8",
        ]  # fmt: skip

    def start(self) -> ReferenceProcess:
        self.starts += 1
        log = (self.workdir / f"reference-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        log.close()
        wait_for_port("127.0.0.1", self.port, 20, what="reference pipeline", alive=self.alive)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> ReferenceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PeakMemory:
    """Samples a process's resident memory (with its children) every 10 ms on a thread; ``peak`` and
    ``baseline`` in bytes."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.baseline = self._rss()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.01):  # the sampling period
            try:
                self.peak = max(self.peak, self._rss())
            except psutil.NoSuchProcess:
                return

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self._rss())


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling interval of a real condition
    return value


def record(name: str, **figures: object) -> None:
    """Print a measured figure (pytest -s shows it) and append it as JSON to $MAILSTORM_FIGURES when set:
    how docs/reliability.md gets its numbers."""
    line = json.dumps({"name": name, **figures})
    print(line)
    path = os.environ.get("MAILSTORM_FIGURES")
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")
