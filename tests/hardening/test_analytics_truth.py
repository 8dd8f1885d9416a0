"""Truth against a known-broken webhook receiver (tests/hardening/broken_receiver.py: counts every
redelivery, drops the events of the posts it gets while busy, fails some posts after counting them): the
real fake ESP posts it MailerSend webhooks, with duplicates and retries, and the analytics report's
missed and double-counted figures equal the receiver's own truth, event kind by event kind."""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import yaml

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.reports.analytics import analyze
from mailstorm.reports.store import open_run
from tests.hardening.broken_receiver import BrokenReceiver

MESSAGES = 40


def settled(ledger) -> bool:
    """Every event the ESP posted has its final record."""
    final: dict[str, bool] = {}
    for r in LedgerReader(ledger).records([Kind.ESP_WEBHOOK]):
        final[r["event_id"]] = final.get(r["event_id"], False) or r["final"]
    return len(final) >= MESSAGES and all(final.values())


def test_missed_and_double_counted_equal_a_broken_receivers_truth(tmp_path):
    ledger = tmp_path / "ledger"
    with BrokenReceiver(ledger, "mailersend") as rx:
        hooks = tmp_path / "webhooks.yaml"
        spec = {"url": rx.url, "seed": 16, "retry_time_scale": 0.01, "events": {"open": 0.5, "click": 0.5},
                "faults": {"duplicate": 0.2}}  # fmt: skip
        hooks.write_text(yaml.safe_dump(spec))
        t0 = time.time_ns()
        with EspProcess(ledger, profile="mailersend", extra_args=["--webhooks", str(hooks)],
                        log_path=tmp_path / "esp.log") as esp:  # fmt: skip
            with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
                for i in range(MESSAGES):
                    msg = EmailMessage()
                    msg["From"], msg["To"], msg["Subject"] = "a@x.test", f"r{i}@x.test", "hi"
                    msg.set_content("hello")
                    s.send_message(msg)
            deadline = time.monotonic() + 60
            while not settled(ledger) and time.monotonic() < deadline:
                time.sleep(0.2)  # polling the ESP's ledger for the retries to end
            assert settled(ledger)
    with open_run(ledger) as store:
        a = analyze(store, t0, [], 10)
    assert a is not None and a.source == "events" and a.exact
    missed, double = rx.missed(), rx.double_counted()
    assert sum(missed.values()) > 0 and sum(double.values()) > 0  # the receiver really was broken both ways
    for kind in ("delivered", "open", "click"):
        row = a.kinds[kind]
        assert (row["missed"], row["double_counted"]) == (missed[kind], double[kind]), kind
        assert row["sent"] == sum(k == kind for k in rx.kind.values())
        assert row["counted"] == sum(n for e, n in rx.counted.items() if rx.kind[e] == kind)
    assert a.total["error"] == sum(missed.values()) + sum(double.values())
