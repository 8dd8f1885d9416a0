"""Crash safety: the fake ESP and the reference pipeline SIGKILLed at seeded random moments during load
(a random number of acknowledged messages into each round), restarted on the same ports, the ledger or
the queue, again and again: every 250 a client saw is in the ESP's ledger (fake ESP) or reaches the fake
ESP after the restarts (reference pipeline). A few kills by default; 20 each with MAILSTORM_FUZZ_LONG=1
or in the long tests."""

from __future__ import annotations

import random
import smtplib
import threading
import time
from pathlib import Path

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from tests.hardening.support import LONG, ReferenceProcess, message, record, wait_until

SEED = 20261128
CLIENTS = 3


class Load:
    """CLIENTS threads sending messages (many per connection) to ``port`` until stopped or ``limit_s``;
    ``acked`` holds every id a client saw 250 for."""

    def __init__(self, port: int, prefix: str, limit_s: float = 60.0) -> None:
        self.port = port
        self.prefix = prefix
        self.limit_s = limit_s
        self.acked: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)
        ]

    def _client(self, n: int) -> None:
        seq = 0
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as s:
                    while not self._stop.is_set() and time.monotonic() < deadline:
                        cid = f"{self.prefix}-{n}-{seq}"
                        seq += 1
                        s.sendmail("s@sender.test", ["r@rcpt.test"], message(cid, 1500))
                        self.acked.append(cid)  # sendmail returned: the client saw 250
            except (smtplib.SMTPException, OSError):
                if self._stop.wait(0.05):  # killed under us: reconnect after a beat, until stopped
                    return

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)


def kill_rounds(kills: int, port: int, kill, restart, prefix: str) -> list[str]:
    """``kills`` rounds of load, each SIGKILLed after a seeded random number of acknowledged messages
    and restarted; returns every acknowledged id."""
    rng = random.Random(f"{SEED}/{prefix}")
    acked: list[str] = []
    for n in range(kills):
        at = rng.randint(20, 300)
        with Load(port, f"{prefix}{n}") as load:
            wait_until(lambda load=load, at=at: len(load.acked) >= at, 60, f"{at} acknowledged messages")
            kill()
        acked += load.acked
        restart()
    return acked


def esp_kills(tmp_path: Path, kills: int) -> None:
    ledger = tmp_path / "ledger"
    esp = EspProcess(ledger, seed=5, log_path=tmp_path / "esp.log").start()
    try:
        acked = kill_rounds(kills, esp.smtp_port, esp.kill, esp.start, "esp")
    finally:
        esp.stop()
    reader = LedgerReader(ledger)
    kept = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED]) if r["acked"]}
    missing = set(acked) - kept
    assert missing == set(), sorted(missing)[:10]
    assert reader.torn_lines <= kills  # at most the line being written at each kill
    record("crash.esp", kills=kills, acknowledged=len(acked), missing=len(missing), torn=reader.torn_lines)


def reference_kills(tmp_path: Path, kills: int) -> None:
    with EspProcess(tmp_path / "esp-ledger", seed=6, log_path=tmp_path / "esp.log") as esp:
        ref = ReferenceProcess(tmp_path, esp.smtp_port, ledger_dir=tmp_path / "sut-ledger").start()
        try:
            acked = kill_rounds(kills, ref.port, ref.kill, ref.start, "ref")

            def delivered() -> set[str]:
                return {r["id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}

            wait_until(lambda: set(acked) <= delivered(), 90, "every acknowledged message at the ESP")
        finally:
            ref.stop()
        at_esp = [r["id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])]
    dupes = len(at_esp) - len(set(at_esp))  # at-least-once: a kill between the ESP's 250 and the commit
    record("crash.reference", kills=kills, acknowledged=len(acked), missing=0, duplicates=dupes)


def test_fake_esp_killed_at_random_moments_keeps_every_acknowledged_record(tmp_path):
    """SIGKILL of the fake ESP mid-load, a few times (20 in long mode), restarted on the same ports and
    ledger: every message a client saw 250 for has its esp.accepted record."""
    esp_kills(tmp_path, 20 if LONG else 3)


def test_reference_pipeline_killed_at_random_moments_delivers_every_acknowledged_message(tmp_path):
    """SIGKILL of the reference pipeline mid-load, a few times (20 in long mode), restarted on its queue:
    every message a client saw 250 for reaches the fake ESP."""
    reference_kills(tmp_path, 20 if LONG else 3)


@pytest.mark.long
def test_fake_esp_survives_twenty_kills(tmp_path):
    """The issue's count: 20 SIGKILLs of the fake ESP, no acknowledged record lost."""
    esp_kills(tmp_path, 20)


@pytest.mark.long
def test_reference_pipeline_survives_twenty_kills(tmp_path):
    """The issue's count: 20 SIGKILLs of the reference pipeline, no acknowledged message undelivered."""
    reference_kills(tmp_path, 20)
