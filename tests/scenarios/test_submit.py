"""The SMTP submitter (smtplib) against a real fake ESP: outcomes, phases, reconnects, AUTH."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailstorm.ledger import SHA_HEX_DIGITS, Kind, LedgerReader
from mailstorm.ports import free_port, wait_for_port
from mailstorm.scenarios.messages import MessageFactory
from mailstorm.scenarios.model import LoadSpec, SmtpOptions
from mailstorm.scenarios.submit import SmtpSubmitter


@pytest.fixture
def factory():
    return MessageFactory(LoadSpec(), run_id="s", worker=0, seed=1)


def submitter(esp, per_conn=100, **smtp):
    return SmtpSubmitter(
        esp.smtp_host, esp.smtp_port, SmtpOptions(**smtp), msgs_per_connection=per_conn, timeout_s=5
    )


def test_messages_per_connection_are_respected(esp, factory):
    """7 messages at 3 per connection use 3 SMTP sessions, and all 7 are accepted with 250."""
    sub = submitter(esp, per_conn=3)
    results = [sub.submit(factory.next()) for _ in range(7)]
    sub.close()
    assert all(r.ok and r.code == 250 and r.phase == "done" for r in results)
    assert sub.connections == 3
    assert LedgerReader(esp.ledger_dir).count(Kind.ESP_ACCEPTED) == 7


def test_refusal_at_rcpt_keeps_the_session(esp, factory):
    """A 451 at RCPT is reported with its code, text and phase; the session stays usable (RSET)."""
    sub = submitter(esp)
    fid = esp.control.add_fault(
        {"type": "reply", "phase": "rcpt", "reply": "451 4.3.0 Temporary service failure"}
    )
    refused = sub.submit(factory.next())
    esp.control.remove_fault(fid)
    ok = sub.submit(factory.next())
    sub.close()
    assert (refused.ok, refused.code, refused.phase) == (False, 451, "rcpt")
    assert "Temporary service failure" in refused.text and refused.outcome == "451@rcpt"
    assert ok.ok and sub.connections == 1


def test_421_closes_the_session_and_the_next_message_reconnects(esp, factory):
    """A 421 (the server closes the channel) ends the session; the next message opens a new one."""
    sub = submitter(esp)
    assert sub.submit(factory.next()).ok
    fid = esp.control.add_fault({"type": "reply", "phase": "mail", "reply": "421 4.7.0 Try again later"})
    refused = sub.submit(factory.next())
    esp.control.remove_fault(fid)
    again = sub.submit(factory.next())
    sub.close()
    assert (refused.code, refused.phase) == (421, "mail")
    assert again.ok and sub.connections == 2


def test_cut_connection_after_data_is_reported_without_a_code(esp, factory):
    """A connection cut after the final "." has no reply code (phase eod); the next message reconnects."""
    sub = submitter(esp)
    fid = esp.control.add_fault({"type": "disconnect", "phase": "eod"})
    cut = sub.submit(factory.next())
    esp.control.remove_fault(fid)
    again = sub.submit(factory.next())
    sub.close()
    assert (cut.ok, cut.code, cut.phase) == (False, None, "eod") and cut.outcome == "cut@eod"
    assert again.ok and sub.connections == 2


def test_refused_connection_is_reported_at_connect(factory):
    """Nothing listening: the submission fails at connect with no code, and does not raise."""
    sub = SmtpSubmitter("127.0.0.1", free_port(), SmtpOptions(), msgs_per_connection=10, timeout_s=2)
    res = sub.submit(factory.next())
    assert (res.ok, res.code, res.phase) == (False, None, "connect")
    assert "ConnectionRefused" in res.text


def test_auth_user_reaches_the_esp(esp, factory):
    """With AUTH configured the session logs in; the fake ESP records the AUTH user as the key."""
    sub = submitter(esp, auth={"user": "tenant-7", "password": "pw", "allow_plaintext": True})
    assert sub.submit(factory.next()).ok
    sub.close()
    (acc,) = list(LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]))
    assert acc["key"] == "tenant-7"


def test_lines_starting_with_a_dot_arrive_intact(esp, factory):
    """Dot-stuffing (RFC 5321 4.5.2): a body with lines that start with "." reaches the ESP unchanged."""
    base = factory.next()
    raw = base.raw + b".hidden line\r\n..two dots\r\n.\r\nend\r\n"
    msg = dataclasses.replace(base, raw=raw)
    sub = submitter(esp)
    assert sub.submit(msg).ok
    sub.close()
    (acc,) = list(LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]))
    assert acc["sha"] == hashlib.sha256(raw).hexdigest()[:SHA_HEX_DIGITS]


@pytest.fixture
def tls_sink(tmp_path):
    """A STARTTLS-only, AUTH-required aiosmtpd server in its own process, with a self-signed cert."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("tls_sink.py")), str(port), str(cert), str(key)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port("127.0.0.1", port, what="TLS sink", alive=lambda: proc.poll() is None)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def test_starttls_and_auth(tls_sink, factory):
    """With starttls and auth set, the session is encrypted and authenticated before MAIL (the sink
    accepts nothing otherwise); without them the same sink refuses the message at MAIL."""
    opts = SmtpOptions(starttls=True, auth={"user": "loaduser", "password": "s3cret"})
    sub = SmtpSubmitter("127.0.0.1", tls_sink, opts, msgs_per_connection=5, timeout_s=5)
    results = [sub.submit(factory.next()) for _ in range(3)]
    sub.close()
    assert all(r.ok and r.text.endswith("OK tls+auth") for r in results), results
    plain = SmtpSubmitter("127.0.0.1", tls_sink, SmtpOptions(), msgs_per_connection=5, timeout_s=5)
    refused = plain.submit(factory.next())
    plain.close()
    assert (refused.ok, refused.code, refused.phase) == (False, 530, "mail")
    wrong = SmtpSubmitter(
        "127.0.0.1",
        tls_sink,
        SmtpOptions(starttls=True, auth={"user": "loaduser", "password": "nope"}),
        msgs_per_connection=5,
        timeout_s=5,
    )
    bad = wrong.submit(factory.next())
    assert (bad.ok, bad.code, bad.phase) == (False, 535, "auth"), bad


def _server(script_args: list[str], what: str):
    port = free_port()
    proc = subprocess.Popen(
        # smtp-sink takes [host]:port and a listen backlog; the test scripts just a port
        [*script_args, *([f"127.0.0.1:{port}", "64"] if what == "smtp-sink" else [str(port)])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, what=what, alive=lambda: proc.poll() is None)
    return port, proc


@pytest.fixture
def pipelining_sink():
    """An aiosmtpd server (own process) that offers PIPELINING and refuses on cue (see the script)."""
    script = Path(__file__).with_name("pipelining_sink.py")
    port, proc = _server([sys.executable, str(script)], "pipelining sink")
    yield port
    proc.terminate()
    proc.wait(10)


def test_pipelined_envelope_reports_each_refusal_at_its_phase(pipelining_sink, factory):
    """With PIPELINING offered, MAIL/RCPT/DATA go in one write; a partly refused recipient list still
    delivers, an all-refused one is reported at rcpt, a refused sender at mail, and the session stays
    in step for the next message (each reply read in order)."""
    sub = SmtpSubmitter("127.0.0.1", pipelining_sink, SmtpOptions(), msgs_per_connection=100, timeout_s=5)
    base = factory.next()
    partly = sub.submit(dataclasses.replace(base, recipients=("busy1@x.test", "ok1@x.test", "ok2@x.test")))
    assert sub.pipelining
    none = sub.submit(dataclasses.replace(factory.next(), recipients=("busy2@x.test", "busy3@x.test")))
    sender = sub.submit(dataclasses.replace(factory.next(), sender="refuse@shop.test"))
    after = sub.submit(factory.next())
    sub.close()
    assert partly.ok and partly.text.endswith("queued 1 rcpts=2")
    assert (none.ok, none.code, none.phase, none.text) == (False, 450, "rcpt", "4.2.1 Mailbox busy")
    assert (sender.ok, sender.code, sender.phase) == (False, 550, "mail")
    assert after.ok and after.text.endswith("queued 2 rcpts=1") and sub.connections == 1


def test_pipelined_submission_to_postfix_smtp_sink(factory):
    """Against Postfix's smtp-sink (offers PIPELINING): many messages, several recipients each, all
    accepted on reused sessions; a disconnect after DATA is a cut at phase data."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    port, proc = _server(["/usr/sbin/smtp-sink", *user], "smtp-sink")
    cut_port, cut_proc = _server(["/usr/sbin/smtp-sink", *user, "-q", "DATA"], "smtp-sink")
    try:
        sub = SmtpSubmitter("127.0.0.1", port, SmtpOptions(), msgs_per_connection=10, timeout_s=5)
        msgs = [dataclasses.replace(factory.next(), recipients=("a@x.test", "b@x.test")) for _ in range(25)]
        results = [sub.submit(m) for m in msgs]
        sub.close()
        assert sub.pipelining and sub.connections == 3
        assert all(r.ok and r.code == 250 for r in results)
        cut = SmtpSubmitter("127.0.0.1", cut_port, SmtpOptions(), msgs_per_connection=10, timeout_s=5)
        res = cut.submit(factory.next())
        assert (res.ok, res.code, res.phase) == (False, None, "data")
    finally:
        for p in (proc, cut_proc):
            p.kill()
            p.wait()
