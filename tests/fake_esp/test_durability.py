"""Ledger durability and multi-process serving, with real processes and real clients.

- SIGKILL of the fake ESP during a load of at least 2,000 messages: every message a client saw 250 for
  has its esp.accepted record (records are written before the reply); also with small ledger segments
  (closed and compressed as the load runs): the open segment torn by the kill is read to its last
  whole record, and the closed ones are compressed at zstd level 1 (the fake ESP's policy).
- 2 worker processes on one port (SO_REUSEPORT): both take connections and write their own ledger; the
  merged count equals what the clients sent; a fault added through the control API reaches both.
"""

from __future__ import annotations

import smtplib
import threading
import time

import psutil
import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader, segments
from mailstorm.ledger.segments import SEGMENT_ENV
from tests.fake_esp.clients import message, smtp_transaction, wait_until

CLIENTS = 4


def blast(port: int, name: str, count: int, per_conn: int, acked: list[str], stop: threading.Event) -> None:
    """Send up to ``count`` messages, ``per_conn`` per connection; append each id the ESP answered 250."""
    sent = 0
    deadline = time.monotonic() + 60
    try:
        while sent < count and not stop.is_set() and time.monotonic() < deadline:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                for _ in range(min(per_conn, count - sent)):
                    cid = f"{name}-{sent}"
                    s.sendmail("s@sender.test", ["r@rcpt.test"], message(cid, 2000))
                    acked.append(cid)  # sendmail returned: the client saw 250
                    sent += 1
    except (smtplib.SMTPException, OSError):
        pass  # the ESP was killed under us: expected


@pytest.mark.parametrize("segment", [None, "64KB"])
def test_sigkill_loses_no_record_of_an_acknowledged_message(tmp_path, monkeypatch, segment):
    """Kill -9 mid-load (>= 2,000 messages acknowledged): each acknowledged id is in the ledger."""
    if segment is not None:
        monkeypatch.setenv(SEGMENT_ENV, segment)
    ledger = tmp_path / "ledger"
    esp = EspProcess(ledger, log_path=tmp_path / "esp.log").start()
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=blast, args=(esp.smtp_port, f"k{i}", 5000, 200, acked, stop), daemon=True)
        for i in range(CLIENTS)
    ]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 2200, timeout=90, what="2,200 acknowledged messages")
        if segment is not None:  # the niced compressor child may lag on a busy machine: kill after its first
            wait_until(lambda: any(ledger.glob("*.jsonl.zst")), timeout=90, what="a compressed segment")
            # Its one compressor child, at level 1 (SegmentPolicy.fast: the ESP's throughput is measured).
            argv = [c.cmdline() for c in psutil.Process(esp.pid).children(recursive=True)]
            assert [a[a.index("mailstorm.ledger.compress") :] for a in argv] == [
                ["mailstorm.ledger.compress", "--fast"]
            ]
        esp.kill()
    finally:
        stop.set()
        esp.kill()
        for t in threads:
            t.join(30)
    seen = set(acked)
    assert len(seen) >= 2000
    reader = LedgerReader(ledger)
    recorded = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED]) if r["acked"]}
    assert seen - recorded == set()
    assert reader.torn_lines <= 1  # at most the line being written when the kill landed
    names = [p.name for p in segments(ledger)]
    if segment is None:
        assert names == ["esp-smtp-0.jsonl"]
    else:  # ~2,200 messages of ~300 ledger bytes: about ten 64 KB segments, all but the last compressed
        assert len(names) >= 5 and names[-1] == "esp-smtp-0.jsonl"
        assert any(n.endswith(".jsonl.zst") for n in names)


def test_two_processes_share_one_port(tmp_path):
    """Two workers on one port both serve and write ledgers; merged counts equal the clients' counts."""
    ledger = tmp_path / "ledger"
    with EspProcess(ledger, processes=2, log_path=tmp_path / "esp.log") as esp:
        assert esp.control.health()["workers"] == 2
        acked: list[str] = []
        stop = threading.Event()
        # Many short connections: the kernel spreads connections (not messages) over the workers.
        threads = [
            threading.Thread(target=blast, args=(esp.smtp_port, f"m{i}", 150, 3, acked, stop))
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert len(acked) == CLIENTS * 150
        counters = esp.control.counters()
        assert counters["workers"] == 2 and counters["accepted"] == len(acked)

        files = sorted(p.name for p in ledger.glob("*.jsonl"))
        assert files == ["esp-smtp-0.jsonl", "esp-smtp-1.jsonl"]
        reader = LedgerReader(ledger)
        per_file = {p.name: sum(1 for _ in reader.iter_file(p, [Kind.ESP_ACCEPTED])) for p in reader.files()}
        assert all(n > 0 for n in per_file.values()), per_file
        assert sorted(r["id"] for r in reader.records([Kind.ESP_ACCEPTED])) == sorted(acked)

        # A fault added through the parent's control API reaches both workers.
        esp.control.add_fault({"type": "reply", "phase": "mail", "reply": "451 4.3.0 both"})
        wait_until(lambda: smtp_transaction(esp.smtp_port, "probe").codes["mail"] == 451, what="the fault")
        codes = [smtp_transaction(esp.smtp_port, f"f{i}").codes["mail"] for i in range(30)]
        assert set(codes) == {451}
        sources = {r["src"] for r in reader.records([Kind.ESP_REPLIED])}
        assert sources == {"esp-smtp-0", "esp-smtp-1"}
