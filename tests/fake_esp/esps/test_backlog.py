"""ESP backlogs: past a quota that queues, Mandrill's SDK sees "queued" (hourly-quota-exhausted) and the
ledger an esp.delivered when the next window begins; a backlog fault (SES's DeliveryDelay) accepts now
over boto3 and SMTP alike and delivers ``delay_s`` later."""

from __future__ import annotations

import smtplib
import time

from mailstorm.fake_esp.faults.quota import window_of
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.clients import message, wait_until
from tests.fake_esp.esps.test_mandrill import mandrill_send
from tests.fake_esp.esps.test_ses import ses_send
from tests.fake_esp.http_support import Receiver, accepted, new_id, start_esp

WINDOW_S = 2.0  # the quota's "hour", short for the test (the window is the fault's own field)


def delivered(esp: EspProcess, cid: str) -> list[dict]:
    return [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_DELIVERED]) if r["id"] == cid]


def test_mandrill_past_its_quota_answers_queued_and_delivers_in_the_next_window(esp):
    """A quota of 1 per window with over: queue on Mandrill's API: the first send is "sent"; the second,
    in the same window, is "queued" with queued_reason hourly-quota-exhausted, accepted now (in the
    ledger at once) and delivered (esp.delivered, same _id) when the next window begins."""
    esp.control.add_fault(
        {"type": "quota", "phase": "http", "key": "api_key", "limit": 1, "window": WINDOW_S, "over": "queue"}
    )
    start = (window_of(time.time(), WINDOW_S) + 1) * WINDOW_S
    wait_until(lambda: time.time() >= start, timeout=5, what="a window to begin")
    first, second = new_id(), new_id()
    (a,) = mandrill_send(esp, first)
    (b,) = mandrill_send(esp, second)
    assert window_of(time.time(), WINDOW_S) == window_of(start, WINDOW_S), "the sends spanned two windows"
    assert (a["status"], a["queued_reason"]) == ("sent", None)
    assert (b["status"], b["queued_reason"]) == ("queued", "hourly-quota-exhausted")
    assert len(accepted(esp, second)) == 1 and delivered(esp, second) == []
    (rec,) = wait_until(lambda: delivered(esp, second), timeout=10, what="the queued message's delivery")
    assert rec["esp_id"] == b["_id"] and rec["api"] == "mandrill"
    assert rec["t"] >= (window_of(start, WINDOW_S) + 1) * WINDOW_S * 1e9  # not before the next window
    assert delivered(esp, first) == []  # delivered when accepted: no hold, no record


def test_ses_delivery_delay_accepts_now_and_delivers_later(esp):
    """A backlog fault on SES's API: boto3 gets its MessageId at once; esp.delivered comes delay_s after
    the esp.accepted, naming the same MessageId and the fault."""
    esp.control.add_fault({"name": "delay", "type": "backlog", "phase": "http", "delay_s": 0.6})
    cid = new_id()
    out = ses_send(esp, cid)
    (acc,) = accepted(esp, cid)
    (rec,) = wait_until(lambda: delivered(esp, cid), timeout=10, what="the delayed delivery")
    assert (rec["esp_id"], rec["fault"], rec["held_s"]) == (out["MessageId"], "delay", 0.6)
    assert 0.55e9 <= rec["t"] - acc["t"] < 5e9


def test_smtp_backlog_answers_250_and_delivers_later(esp):
    """Over SMTP the client sees its 250 at once; the ledger has the delivery delay_s later."""
    esp.control.add_fault({"name": "delay", "type": "backlog", "delay_s": 0.5})
    cid = new_id()
    with smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.sendmail("s@sender.test", ["r@rcpt.test"], message(cid)) == {}
    (acc,) = accepted(esp, cid)
    (rec,) = wait_until(lambda: delivered(esp, cid), timeout=10, what="the delayed delivery")
    assert rec["proto"] == "smtp" and 0.45e9 <= rec["t"] - acc["t"] < 5e9


def test_a_held_messages_webhook_comes_at_its_delivery(tmp_path):
    """The ESP's delivered webhook for a held message is posted when it leaves the backlog, not when it
    was accepted: SES (boto3) with a 1 s backlog, no event before the esp.delivered, one after."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            esp.control.add_fault({"name": "delay", "type": "backlog", "phase": "http", "delay_s": 1.0})
            cid = new_id()
            ses_send(esp, cid)
            (acc,) = accepted(esp, cid)
            (event,) = wait_until(rx.events, timeout=10, what="the delivered webhook")
            (rec,) = delivered(esp, cid)
        finally:
            esp.stop()
    assert (event["id"], event["event"]) == (cid, "delivered")
    assert rec["t"] - acc["t"] >= 0.95e9
