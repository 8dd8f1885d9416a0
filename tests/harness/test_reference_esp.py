"""The reference pipeline against the real fake ESP (its own process, faults through the control API): the
ESP's ledger is the judge of what arrived, over SMTP and over the SendGrid-shaped HTTP API."""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter

import pytest

from mailstorm import replies
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.targets.base import TargetContext
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port

HOST = "127.0.0.1"


@pytest.fixture
def run(tmp_path):
    """A fake ESP (SMTP + HTTP APIs) and a ``start(**spec)`` for the reference target, sharing one ledger
    directory as in a run; everything is stopped afterwards."""
    ledger_dir = tmp_path / "run" / "ledger"
    esp = EspProcess(ledger_dir, seed=3, http_port=free_port(), log_path=tmp_path / "esp.log")
    esp.start()
    targets: list[ReferenceTarget] = []

    class Run:
        reader = LedgerReader(ledger_dir)

        def __init__(self) -> None:
            self.esp = esp

        def start(self, **spec) -> tuple[ReferenceTarget, int]:
            target = ReferenceTarget(ReferenceTargetSpec(**spec))
            targets.append(target)
            ctx = TargetContext(
                run_dir=tmp_path / "run",
                ledger_dir=ledger_dir,
                seed=11,
                esp_smtp=(esp.smtp_host, esp.smtp_port),
                esp_http=esp.http_url,
            )
            (endpoint,) = target.start(ctx)
            return target, endpoint.port

        def records(self, kind: str) -> list[dict]:
            return list(self.reader.records([kind]))

        def esp_ids(self) -> list[str]:
            return [r["id"] for r in self.records(Kind.ESP_ACCEPTED)]

    try:
        yield Run()
    finally:
        for target in targets:
            target.stop()
        esp.stop()
    assert not any(p for t in targets for p in t.pids)


def message(cid: str) -> str:
    return (
        f"From: load@client.test\r\nTo: rcpt@example.test\r\nSubject: hello {cid}\r\n"
        f"Message-ID: <{cid}@client.test>\r\n{CORRELATION_HEADER}: {cid}\r\n\r\nbody of {cid}\r\n"
    )


def submit(port: int, ids: list[str]) -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as smtp:
        for cid in ids:
            smtp.sendmail("load@client.test", ["rcpt@example.test"], message(cid))


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval of a real condition


def test_smtp_relay_delivers_each_message_once_with_its_id(run):
    """100 messages accepted by the pipeline are each kept once by the ESP under the same correlation id,
    and the ESP acknowledged every one (acked)."""
    _, port = run.start()
    ids = [f"r1-0-{n}" for n in range(100)]
    submit(port, ids)
    wait_until(lambda: len(run.esp_ids()) >= len(ids), 20, "100 messages at the ESP")
    assert sorted(run.esp_ids()) == sorted(ids)
    assert all(r["acked"] and r["proto"] == "smtp" for r in run.records(Kind.ESP_ACCEPTED))
    assert sorted(r["id"] for r in run.records(Kind.SUT_RELAYED)) == sorted(ids)


def test_a_temporary_esp_fault_is_ridden_out_by_retries(run):
    """A 451-after-DATA fault for 1.5 s (ttl) defers the messages it hits (with the ESP's code) and every
    message is kept by the ESP exactly once after it expires."""
    _, port = run.start(backoff_base_s=0.1, backoff_max_s=0.8)
    run.esp.control.add_fault(
        {"type": "reply", "phase": "eod", "reply": str(replies.TEMP_FAILURE), "ttl": 1.5}
    )
    ids = [f"r2-0-{n}" for n in range(20)]
    submit(port, ids)
    wait_until(lambda: len(run.esp_ids()) >= len(ids), 20, "every message after the fault")
    assert Counter(run.esp_ids()) == Counter(ids)
    deferred = run.records(Kind.SUT_DEFERRED)
    assert {r["id"] for r in deferred} == set(ids)
    assert {r["code"] for r in deferred} == {replies.TEMP_FAILURE.code}
    assert run.records(Kind.SUT_BOUNCED) == []


def test_a_permanent_esp_rejection_bounces_once_and_is_never_retried(run):
    """A 554 at end of data bounces each message once: one sut.bounced per message, one ESP reply each,
    nothing kept by the ESP, nothing left queued."""
    target, port = run.start()
    run.esp.control.add_fault({"type": "reply", "phase": "eod", "reply": str(replies.MESSAGE_REJECTED)})
    ids = [f"r3-0-{n}" for n in range(10)]
    submit(port, ids)
    wait_until(lambda: len(run.records(Kind.SUT_BOUNCED)) >= len(ids), 10, "ten bounces")
    wait_until(lambda: target.queue_depth() == 0, 5, "an empty queue")
    bounced = run.records(Kind.SUT_BOUNCED)
    assert Counter(r["id"] for r in bounced) == Counter(ids)
    assert {r["code"] for r in bounced} == {replies.MESSAGE_REJECTED.code}
    refusals = [r for r in run.records(Kind.ESP_REPLIED) if r["phase"] == "eod"]
    assert len(refusals) == len(ids)
    assert run.esp_ids() == [] and run.records(Kind.SUT_DEFERRED) == []


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_an_esp_outage_delays_but_loses_nothing(run, mode):
    """During a 5 s ESP outage (connections refused, or accepted and never answered) the pipeline keeps
    accepting and deferring; after it, every accepted message is kept by the ESP."""
    _, port = run.start(backoff_base_s=0.2, backoff_max_s=1.0, relay_timeout_s=1.0)
    run.esp.control.add_fault({"type": "outage", "duration_s": 5, "mode": mode})
    began = time.monotonic()
    ids = [f"r4{mode}-0-{n}" for n in range(50)]
    submit(port, ids)
    wait_until(lambda: set(run.esp_ids()) >= set(ids), 30, "every message after the outage")
    assert time.monotonic() - began >= 4.0, "delivered before the outage ended: the fault did not bite"
    assert set(run.esp_ids()) == set(ids)
    assert {r["id"] for r in run.records(Kind.SUT_DEFERRED)} <= set(ids)
    assert run.records(Kind.SUT_DEFERRED), "an outage must show as deferrals"
    assert run.records(Kind.SUT_BOUNCED) == []


def test_http_relay_posts_sendgrid_requests_and_retries_5xx(run):
    """relay: http posts each message to /v3/mail/send; the ESP keeps it under its correlation id (api
    sendgrid); a 451 fault on the API (503 over HTTP) for 1.5 s is retried until every message is kept."""
    _, port = run.start(relay="http", backoff_base_s=0.1, backoff_max_s=0.8)
    run.esp.control.add_fault(
        {"type": "reply", "phase": "http", "reply": str(replies.TEMP_FAILURE), "ttl": 1.5}
    )
    ids = [f"r5-0-{n}" for n in range(30)]
    submit(port, ids)
    wait_until(lambda: len(run.esp_ids()) >= len(ids), 20, "every message over HTTP")
    assert Counter(run.esp_ids()) == Counter(ids)
    kept = run.records(Kind.ESP_ACCEPTED)
    assert {(r["proto"], r["api"]) for r in kept} == {("http", "sendgrid")}
    deferred = run.records(Kind.SUT_DEFERRED)
    assert deferred and {r["code"] for r in deferred} == {503}
    assert {r["code"] for r in run.records(Kind.SUT_RELAYED)} == {202}


def test_http_relay_bounces_a_request_the_api_rejects(run):
    """A permanent API refusal (a 554 fault becomes 400) bounces the message once with the HTTP status."""
    _, port = run.start(relay="http")
    run.esp.control.add_fault({"type": "reply", "phase": "http", "reply": str(replies.MESSAGE_REJECTED)})
    submit(port, ["r6-0-0"])
    wait_until(lambda: run.records(Kind.SUT_BOUNCED), 10, "a bounce")
    assert [(r["id"], r["code"]) for r in run.records(Kind.SUT_BOUNCED)] == [("r6-0-0", 400)]


@pytest.mark.long
def test_sigkill_under_sustained_load_loses_nothing(run):
    """3000 messages from 8 connections at full speed, with two SIGKILL + restart cycles: every message
    that got a 250 is kept by the ESP; duplicates are bounded by the attempts in flight at each kill."""
    target, port = run.start(concurrency=16)
    acked: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 120

    def sender(worker: int) -> None:
        seq = 0
        while seq < 375 and time.monotonic() < deadline:
            try:
                with smtplib.SMTP(HOST, port, timeout=10) as smtp:
                    while seq < 375:
                        cid = f"r7-{worker}-{seq}"
                        seq += 1
                        smtp.sendmail("load@client.test", ["rcpt@example.test"], message(cid))
                        with lock:
                            acked.append(cid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the pipeline is down: retry the connection, bounded by the deadline

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for at in (800, 1800):
        wait_until(lambda at=at: len(run.records(Kind.SUT_ACCEPTED)) >= at, 60, f"{at} acceptances")
        target.act("kill")
        target.act("restart")
    for t in threads:
        t.join(130)
    assert len(acked) >= 2900
    wait_until(lambda: set(acked) <= set(run.esp_ids()), 60, "every acknowledged message at the ESP")
    counts = Counter(run.esp_ids())
    duplicates = sum(n - 1 for n in counts.values())
    print(f"acked {len(acked)}, kept {len(counts)} distinct, {duplicates} duplicate(s)")
    assert duplicates <= 2 * 16
