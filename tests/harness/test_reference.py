"""The reference pipeline as a real process (through the ``reference`` target) relaying to a real SMTP
server: acceptance, header intact, retry with backoff, bounces, an ESP outage, SIGKILL and restart,
actions, and the open-relay guards."""

from __future__ import annotations

import itertools
import smtplib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailstorm import replies
from mailstorm.errors import UserError
from mailstorm.harness.targets.base import TargetContext
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port, port_open, wait_for_port
from tests.harness.sut_support import Sink

HOST = "127.0.0.1"


@pytest.fixture
def esp():
    e = Sink().up()
    yield e
    e.down()


@pytest.fixture
def start_reference(tmp_path):
    """Start a reference target relaying to a ``Sink``; stops it (and checks nothing is left) afterwards."""
    started: list[ReferenceTarget] = []

    def start(esp: Sink, **spec) -> tuple[ReferenceTarget, int]:
        target = ReferenceTarget(ReferenceTargetSpec(**spec))
        ctx = TargetContext(
            run_dir=tmp_path / "run",
            ledger_dir=tmp_path / "run" / "ledger",
            seed=7,
            esp_smtp=(HOST, esp.port),
        )
        started.append(target)
        (endpoint,) = target.start(ctx)
        return target, endpoint.port

    yield start
    for target in started:
        target.stop()
        assert not any(target.pids), "stop() left a pipeline process running"


def message(cid: str) -> str:
    return (
        f"From: load@client.test\r\nTo: rcpt@example.test\r\nSubject: {cid}\r\n"
        f"Message-ID: <{cid}@client.test>\r\n{CORRELATION_HEADER}: {cid}\r\n\r\nbody {cid}\r\n"
    )


def submit(port: int, ids: list[str]) -> list[str]:
    """Send every id on one connection; return those the pipeline answered 250 for."""
    accepted = []
    with smtplib.SMTP(HOST, port, timeout=10) as smtp:
        for cid in ids:
            smtp.sendmail("load@client.test", ["rcpt@example.test"], message(cid))
            accepted.append(cid)
    return accepted


def ledger(tmp_path: Path, kind: str) -> list[dict]:
    return list(LedgerReader(tmp_path / "run" / "ledger").records([kind]))


def wait_until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval of a real condition


def health(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        with exc:  # an HTTPError holds the open response
            return exc.code


def test_accepted_messages_reach_the_esp_with_the_correlation_header_intact(esp, start_reference, tmp_path):
    """Every message answered 250 is queued, relayed once on its first attempt, and arrives with its
    X-Mailstorm-Id unchanged; the queue is empty afterwards."""
    target, port = start_reference(esp)
    ids = [f"run-0-{n}" for n in range(30)]
    assert submit(port, ids) == ids
    wait_until(lambda: len(esp.ids) >= len(ids), 15, "30 messages at the ESP")
    assert sorted(esp.ids) == sorted(ids)
    accepted = ledger(tmp_path, Kind.SUT_ACCEPTED)
    assert sorted(r["id"] for r in accepted) == sorted(ids)
    assert len({r["queue_id"] for r in accepted}) == len(ids)
    # The ESP keeps a message before its 250 reaches the pipeline, which only then writes sut.relayed.
    wait_until(lambda: len(ledger(tmp_path, Kind.SUT_RELAYED)) >= len(ids), 5, "30 sut.relayed records")
    relayed = ledger(tmp_path, Kind.SUT_RELAYED)
    assert sorted(r["id"] for r in relayed) == sorted(ids)
    assert {(r["attempt"], r["code"]) for r in relayed} == {(1, 250)}
    wait_until(lambda: target.queue_depth() == 0, 5, "an empty queue")
    assert target.alive()


def test_transient_replies_are_retried_with_backoff_until_the_esp_accepts(esp, start_reference, tmp_path):
    """A 451 after DATA defers the message (no loss, no bounce); each retry waits longer than the last
    (exponential, with jitter in [0.5, 1) of the step); once the ESP accepts, it is relayed once."""
    esp.rec.reply = str(replies.TEMP_FAILURE)
    _, port = start_reference(esp, backoff_base_s=0.1, backoff_max_s=10.0)
    submit(port, ["retry-1"])
    wait_until(lambda: len(ledger(tmp_path, Kind.SUT_DEFERRED)) >= 4, 15, "four deferrals")
    esp.rec.reply = None
    wait_until(lambda: esp.ids == ["retry-1"], 15, "the message at the ESP")
    deferred = ledger(tmp_path, Kind.SUT_DEFERRED)
    assert [r["attempt"] for r in deferred] == list(range(1, len(deferred) + 1))
    assert {r["code"] for r in deferred} == {replies.TEMP_FAILURE.code}
    for r in deferred:  # equal jitter: half the step at least, never the whole of it
        step = min(10.0, 0.1 * 2 ** (r["attempt"] - 1))
        assert 0.5 * step <= r["retry_in_s"] <= step
    for a, b in itertools.pairwise(deferred):  # the next attempt came no sooner than scheduled
        assert (b["t"] - a["t"]) / 1e9 >= a["retry_in_s"] - 0.01
    relayed = ledger(tmp_path, Kind.SUT_RELAYED)
    assert [(r["id"], r["attempt"]) for r in relayed] == [("retry-1", len(deferred) + 1)]
    assert ledger(tmp_path, Kind.SUT_BOUNCED) == []


def test_a_permanent_reply_bounces_the_message_once(esp, start_reference, tmp_path):
    """A 554 after DATA is answered by one sut.bounced record with the ESP's code, no retry, and the
    message leaves the queue."""
    esp.rec.reply = str(replies.MESSAGE_REJECTED)
    target, port = start_reference(esp)
    submit(port, ["bounce-1"])
    wait_until(lambda: ledger(tmp_path, Kind.SUT_BOUNCED), 10, "a bounce record")
    wait_until(lambda: target.queue_depth() == 0, 5, "an empty queue")
    bounced = ledger(tmp_path, Kind.SUT_BOUNCED)
    assert [(r["id"], r["code"]) for r in bounced] == [("bounce-1", replies.MESSAGE_REJECTED.code)]
    assert esp.rec.data_replies == 1
    assert ledger(tmp_path, Kind.SUT_DEFERRED) == [] and ledger(tmp_path, Kind.SUT_RELAYED) == []


def test_the_last_allowed_attempt_bounces_instead_of_retrying_for_ever(esp, start_reference, tmp_path):
    """With max_attempts 3 and an ESP that always answers 4xx, the message is deferred twice and then
    bounced once, with the reason in the text."""
    esp.rec.reply = str(replies.GREYLISTED)
    target, port = start_reference(esp, max_attempts=3, backoff_base_s=0.05, backoff_max_s=0.1)
    submit(port, ["giveup-1"])
    wait_until(lambda: ledger(tmp_path, Kind.SUT_BOUNCED), 10, "a bounce record")
    assert [r["attempt"] for r in ledger(tmp_path, Kind.SUT_DEFERRED)] == [1, 2]
    (bounce,) = ledger(tmp_path, Kind.SUT_BOUNCED)
    assert bounce["attempt"] == 3 and "gave up after 3 attempts" in bounce["text"]
    wait_until(lambda: target.queue_depth() == 0, 5, "an empty queue")


def test_recipients_refused_for_now_are_retried_alone_and_those_refused_for_good_bounce(
    esp, start_reference, tmp_path
):
    """One message to three recipients: the ESP takes ok@, refuses later@ with 451 and gone@ with 550.
    The message is relayed to ok@, bounced (partial) for gone@, deferred for later@ only; once later@ is
    accepted, the retry carries later@ alone."""
    esp.rec.rcpt_replies = {
        "later@example.test": str(replies.GREYLISTED),
        "gone@example.test": str(replies.MAILBOX_UNAVAILABLE),
    }
    _, port = start_reference(esp, backoff_base_s=0.2, backoff_max_s=0.2)
    rcpts = ["ok@example.test", "later@example.test", "gone@example.test"]
    with smtplib.SMTP(HOST, port, timeout=10) as smtp:
        smtp.sendmail("load@client.test", rcpts, message("multi-1"))
    wait_until(lambda: ledger(tmp_path, Kind.SUT_DEFERRED), 10, "a deferral")
    del esp.rec.rcpt_replies["later@example.test"]
    wait_until(lambda: len(esp.rec.rcpts) == 2, 10, "the retry to later@")
    assert esp.rec.rcpts == [("multi-1", ["ok@example.test"]), ("multi-1", ["later@example.test"])]
    (bounce,) = ledger(tmp_path, Kind.SUT_BOUNCED)
    assert (bounce["rcpts"], bounce["code"], bounce["partial"]) == (["gone@example.test"], 550, True)
    assert [r["code"] for r in ledger(tmp_path, Kind.SUT_DEFERRED)] == [replies.GREYLISTED.code]
    assert [r["attempt"] for r in ledger(tmp_path, Kind.SUT_RELAYED)] == [1, 2]


def test_an_esp_outage_of_5s_loses_nothing_and_health_reports_it(esp, start_reference, tmp_path):
    """With the ESP down for 5 s, the pipeline keeps answering 250, defers, reports 503 on /health, and
    delivers every queued message once the ESP is back; /health returns to 200."""
    target, port = start_reference(esp, backoff_base_s=0.1, backoff_max_s=1.0)
    (health_url,) = target.health_urls
    esp.down()
    began = time.monotonic()
    ids = [f"outage-{n}" for n in range(60)]
    assert submit(port, ids) == ids
    wait_until(lambda: health(health_url) == 503, 10, "/health to report the outage")
    assert target.queue_depth() == len(ids)
    time.sleep(max(0.0, 5.0 - (time.monotonic() - began)))  # the outage itself lasts 5 s
    esp.up()
    wait_until(lambda: len(set(esp.ids)) == len(ids), 20, "every message after the outage")
    assert sorted(esp.ids) == sorted(ids)
    assert ledger(tmp_path, Kind.SUT_DEFERRED), "an outage must show as deferrals"
    assert all(r["code"] is None for r in ledger(tmp_path, Kind.SUT_DEFERRED))  # connection failures
    wait_until(lambda: health(health_url) == 200, 5, "/health back to ok")
    wait_until(lambda: target.queue_depth() == 0, 5, "an empty queue")
    depths = [r["depth"] for r in ledger(tmp_path, Kind.SUT_QUEUE)]
    assert max(depths) == len(ids)


def test_an_outage_costs_a_few_probes_per_round_not_an_attempt_per_message(esp, start_reference, tmp_path):
    """With the ESP refusing connections for 3 s and 300 messages queued, the destination gate keeps the
    failed attempts to about ``concurrency`` per backoff round: fewer than one per queued message in
    all (without it, each message would fail several times); all 300 arrive after the outage."""
    _, port = start_reference(esp, concurrency=5, backoff_base_s=0.1, backoff_max_s=1.0)
    esp.down()
    began = time.monotonic()
    ids = [f"gate-{n}" for n in range(300)]
    assert submit(port, ids) == ids
    time.sleep(max(0.0, 3.0 - (time.monotonic() - began)))  # the outage itself lasts 3 s
    failed_during_outage = len(ledger(tmp_path, Kind.SUT_DEFERRED))
    esp.up()
    wait_until(lambda: set(esp.ids) == set(ids), 20, "every message after the outage")
    assert 0 < failed_during_outage < len(ids)


def test_sigkill_mid_load_then_restart_delivers_every_acknowledged_message(esp, start_reference, tmp_path):
    """600 messages from 4 connections; the pipeline is SIGKILLed after ~200 acceptances and restarted:
    every message that got a 250 (>= 500) reaches the ESP; duplicates may happen and are counted."""
    target, port = start_reference(esp, concurrency=8)
    acked: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 60

    def sender(worker: int) -> None:
        seq = 0
        while seq < 150 and time.monotonic() < deadline:
            try:
                with smtplib.SMTP(HOST, port, timeout=10) as smtp:
                    while seq < 150:
                        cid = f"kill-{worker}-{seq}"
                        seq += 1  # a message cut off by the kill is not retried: its fate is unknown
                        smtp.sendmail("load@client.test", ["rcpt@example.test"], message(cid))
                        with lock:
                            acked.append(cid)
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the pipeline is down: retry the connection, bounded by the deadline

    threads = [threading.Thread(target=sender, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(ledger(tmp_path, Kind.SUT_ACCEPTED)) >= 200, 30, "200 acceptances")
    assert "SIGKILL" in target.act("kill")
    assert not target.alive()
    assert "restarted" in target.act("restart")
    for t in threads:
        t.join(70)
    assert len(acked) >= 500
    wait_until(lambda: set(acked) <= set(esp.ids), 30, "every acknowledged message at the ESP")
    wait_until(lambda: target.queue_depth() == 0, 10, "an empty queue")
    delivered = esp.ids
    duplicates = len(delivered) - len(set(delivered))
    print(f"acked {len(acked)}, delivered {len(set(delivered))} distinct, {duplicates} duplicate(s)")
    assert duplicates <= 8, "at most the attempts in flight at the kill (concurrency) are relayed twice"


def test_actions_pause_resume_stop_start_and_unknown(esp, start_reference, tmp_path):
    """SIGSTOP freezes the pipeline (the queue file stays readable), SIGCONT resumes it, stop/start keep
    the port, and an unknown action or instance is a one-line UserError."""
    target, port = start_reference(esp)
    assert "SIGSTOP" in target.act("pause")
    assert target.alive() and target.queue_depth() == 0
    assert "SIGCONT" in target.act("resume")
    assert submit(port, ["after-resume"]) == ["after-resume"]
    assert "stopped" in target.act("stop")
    assert not target.alive() and not port_open(HOST, port)
    assert "started" in target.act("start")
    assert "already running" in target.act("start")
    assert submit(port, ["after-start"]) == ["after-start"]
    wait_until(lambda: sorted(esp.ids) == ["after-resume", "after-start"], 10, "both messages")
    with pytest.raises(UserError, match="unknown action 'explode'"):
        target.act("explode")
    with pytest.raises(UserError, match=r"instance must be 0\.\.0"):
        target.act("kill", instance=3)


def test_several_instances_each_get_their_own_port_queue_and_ledger(esp, start_reference, tmp_path):
    """instances: 2 gives two endpoints, ledger sources sut-0 and sut-1, and an action on one instance
    leaves the other running."""
    target = ReferenceTarget(ReferenceTargetSpec(instances=2))
    ctx = TargetContext(
        run_dir=tmp_path / "run", ledger_dir=tmp_path / "run" / "ledger", seed=1, esp_smtp=(HOST, esp.port)
    )
    try:
        endpoints = target.start(ctx)
        assert len({e.port for e in endpoints}) == 2
        for n, e in enumerate(endpoints):
            submit(e.port, [f"inst-{n}"])
        wait_until(lambda: sorted(esp.ids) == ["inst-0", "inst-1"], 10, "one message per instance")
        target.act("kill", instance=0)
        assert target.pids[0] is None and target.pids[1] is not None
        assert not target.alive()
        sources = {p.stem for p in (tmp_path / "run" / "ledger").glob("*.jsonl")}
        assert sources == {"sut-0", "sut-1"}
    finally:
        target.stop()
    assert not any(target.pids)


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mailstorm.harness.reference", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("listen", "relay", "named"),
    [
        ("203.0.113.5:2525", "smtp://127.0.0.1:25", "--listen"),
        ("127.0.0.1:0", "smtp://203.0.113.9:25", "--relay"),
    ],
)
def test_off_loopback_listen_or_relay_is_refused_without_allow_remote(tmp_path, listen, relay, named):
    """Binding or relaying off loopback without --allow-remote exits 2 with one line naming the flag."""
    proc = _run_cli(
        "--listen", listen, "--queue", str(tmp_path / "q.sqlite"), "--relay", relay, "--ledger", str(tmp_path)
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and named in proc.stderr and "loopback" in proc.stderr
    assert not (tmp_path / "q.sqlite").exists()


def test_peers_outside_relay_networks_are_refused_at_rcpt(esp, tmp_path):
    """Not an open relay: a peer outside --relay-networks (here 127.0.0.2 against 127.0.0.1/32) gets
    554 5.7.1 at RCPT and nothing is queued, while a peer inside may relay."""
    port = free_port()
    cmd = [sys.executable, "-m", "mailstorm.harness.reference", "--listen", f"{HOST}:{port}"]
    cmd += ["--queue", str(tmp_path / "q.sqlite"), "--relay", f"smtp://{HOST}:{esp.port}"]
    cmd += ["--ledger", str(tmp_path / "ledger"), "--relay-networks", "127.0.0.1/32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(HOST, port, 15, what="reference pipeline", alive=lambda: proc.poll() is None)
        with smtplib.SMTP(HOST, port, timeout=10, source_address=("127.0.0.2", 0)) as smtp:
            smtp.ehlo()
            smtp.mail("a@client.test")
            code, text = smtp.rcpt("b@example.test")
        assert (code, text.decode()) == (
            replies.RELAY_DENIED.code,
            f"{replies.RELAY_DENIED.status} Relay access denied",
        )
        assert submit(port, ["inside-1"]) == ["inside-1"]
        wait_until(lambda: esp.ids == ["inside-1"], 10, "the allowed peer's message")
    finally:
        proc.terminate()
        proc.wait(15)
    accepted = list(LedgerReader(tmp_path / "ledger").records([Kind.SUT_ACCEPTED]))
    assert [r["id"] for r in accepted] == ["inside-1"]
