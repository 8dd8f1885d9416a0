"""Event webhooks, whatever the ESP: SMTP acceptances are posted in the profile's format; the webhook
faults (duplicate, drop, reorder, delay) and a failing URL show in the ledger, event by event. (Each
ESP's own format is tested in tests/fake_esp/esps/.)"""

from __future__ import annotations

import itertools
import smtplib
from collections import Counter

from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from tests.fake_esp.esps.test_postmark import send_plain as send_postmark
from tests.fake_esp.http_support import Receiver, start_esp, wait_until, webhook_records


def test_smtp_acceptances_post_in_the_profiles_format(tmp_path):
    """With --profile sendgrid, a message accepted over SMTP is posted as a SendGrid Event Webhook array."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, profile="sendgrid")
        try:
            with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
                s.sendmail("a@example.test", ["u@example.test"], f"{CORRELATION_HEADER}: smtp-1\r\n\r\nb\r\n")
            wait_until(lambda: len(rx.events()) >= 1)
        finally:
            esp.stop()
        (event,) = rx.events()
    assert (event["format"], event["event"], event["id"]) == ("sendgrid", "delivered", "smtp-1")


def test_duplicate_and_drop_faults_are_told_apart_in_the_ledger(tmp_path):
    """With duplicate and drop faults on, the receiver's count per event equals what the ledger says:
    2 for an event recorded as duplicated, 0 for one recorded as dropped, 1 otherwise."""
    n = 40
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, faults={"duplicate": 0.25, "drop": 0.25})
        try:
            for i in range(n):
                send_postmark(esp.http_url, f"fault-{i}")
            recs = lambda: [r for r in webhook_records(esp) if r["final"]]  # noqa: E731
            wait_until(lambda: len(recs()) >= n + sum(r["fault"] == "duplicate" for r in recs()))
            wait_until(lambda: len(rx.events()) >= sum(r["ok"] for r in recs()))
        finally:
            esp.stop()
        got = Counter(e["id"] for e in rx.events())
    ledger = webhook_records(esp)
    dropped = {r["id"] for r in ledger if r["fault"] == "drop"}
    doubled = {r["id"] for r in ledger if r["fault"] == "duplicate"}
    assert dropped and doubled, "with 40 events at p=0.25 both faults fire (seeded)"
    assert all(r["status"] is None and r["attempt"] == 0 for r in ledger if r["fault"] == "drop")
    for i in range(n):
        cid = f"fault-{i}"
        expected = 0 if cid in dropped else (2 if cid in doubled else 1)
        assert got[cid] == expected, cid
        assert sum(1 for r in ledger if r["id"] == cid and r["ok"]) == expected


def test_a_down_url_is_retried_on_the_esps_schedule(tmp_path):
    """Postmark's retry schedule (1 min, 5 min, 10 min...) scaled by 0.001: the receiver fails three
    times, the fourth attempt lands; the ledger has attempts 1-4 with the statuses the URL gave."""
    with Receiver(fail_first=3) as rx:
        esp = start_esp(tmp_path, rx.url, retry_time_scale=0.001)
        try:
            send_postmark(esp.http_url, "retry-1")
            wait_until(lambda: len(rx.events()) >= 1)
        finally:
            esp.stop()
    recs = [r for r in webhook_records(esp) if r["id"] == "retry-1"]
    assert [(r["attempt"], r["status"], r["final"]) for r in recs] == [
        (1, 503, False), (2, 503, False), (3, 503, False), (4, 200, True),
    ]  # fmt: skip
    gaps = [(b["t"] - a["t"]) / 1e9 for a, b in itertools.pairwise(recs)]
    assert gaps[1] > gaps[0] * 2  # 60 ms then 300 ms: the schedule's shape, not a fixed interval


def test_reorder_and_delay_faults(tmp_path):
    """Reorder: an event marked reordered reaches the receiver after one accepted later than it; delay:
    no event is posted sooner than delay_ms after its message was accepted."""
    n = 20
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, faults={"reorder": 0.3, "delay_ms": 150})
        try:
            for i in range(n):
                send_postmark(esp.http_url, f"ro-{i:02d}")
            wait_until(lambda: len(rx.events()) >= n)
        finally:
            esp.stop()
        order = [e["id"] for e in rx.events()]
    ledger = webhook_records(esp)
    reordered = {r["id"] for r in ledger if r["fault"] == "reorder"}
    assert reordered, "with 20 events at p=0.3 some are reordered (seeded)"
    for cid in reordered:
        later = [f"ro-{i:02d}" for i in range(int(cid[3:]) + 1, n)]
        assert any(
            order.index(other) < order.index(cid) for other in later if other not in reordered
        ) or not [o for o in later if o not in reordered], cid
    kept = {r["id"]: r["t"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
    # The loop's timers may fire a fraction of a millisecond early (uvloop's clock has 1 ms steps).
    early = [r["id"] for r in ledger if (r["t"] - kept[r["id"]]) / 1e6 < 150 - 2]
    assert not early, early
