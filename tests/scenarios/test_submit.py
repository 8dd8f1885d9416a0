"""The SMTP submitter (smtplib) against a real fake ESP: outcomes, phases, reconnects, AUTH."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ledger import Kind, LedgerReader
from harness.ports import free_port, wait_for_port
from scenarios.messages import MessageFactory
from scenarios.model import LoadSpec, SmtpOptions
from scenarios.submit import SmtpSubmitter


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
    assert acc["sha"] == hashlib.sha256(raw).hexdigest()


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
