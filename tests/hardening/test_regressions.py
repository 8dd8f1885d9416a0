"""Regression tests for bugs the hardening work found that no other test here pins down by itself.

(The other fixes are pinned by the broken-input corpus, the attack tests and the security tests.)
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from mailstorm.ledger import LedgerReader, LedgerWriter
from mailstorm.replies import TOO_MANY_RECIPIENTS
from tests.hardening import attacks
from tests.hardening.support import ROOT
from tests.records import accepted


def half_close_at_once(port: int) -> bytes:
    """Connect, end the sending side at once, read until the server closes (5 s: a hang fails)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := s.recv(4096):  # socket.timeout here is the bug: the server kept it open
            got += chunk
        return got


def test_fake_esp_closes_a_connection_half_closed_at_once(esp):
    """A client that ends its stream right after connecting is closed at once (it was held until the
    idle timeout, 5 minutes, because aiosmtpd's session task was cancelled before it started)."""
    for _ in range(20):
        half_close_at_once(esp.smtp_port)
    assert esp.control.counters()["open_sessions"] == 0


def test_reference_pipeline_closes_a_connection_half_closed_at_once(reference):
    """The same for the reference pipeline (the same aiosmtpd behaviour)."""
    for _ in range(20):
        half_close_at_once(reference.port)


def test_a_restarted_ledger_writer_ends_a_torn_line_first(tmp_path):
    """After a kill in the middle of a write, the restarted writer's first record is not glued to the
    torn line (it was, and was skipped with it)."""
    path = tmp_path / "esp-smtp-0.jsonl"
    path.write_bytes(b'{"t":1,"k":"esp.accepted","src":"esp-smtp-0","id":"a"}\n{"t":2,"k":"esp.acc')
    with LedgerWriter(tmp_path, "esp-smtp-0") as w:
        w.write(accepted("b"))
    reader = LedgerReader(tmp_path)
    assert [r["id"] for r in reader.records()] == ["a", "b"]
    assert reader.torn_lines == 1


def test_reference_pipeline_limits_recipients(reference):
    """10,000 RCPT in one envelope: the reference pipeline takes 1,000 (as Postfix's default limit)
    and answers 452 4.5.3 to the rest (it took them all)."""
    assert attacks.many_recipients(reference.port, 10_000) == {250: 1000, TOO_MANY_RECIPIENTS.code: 9000}


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("PATCH", "/faults", 405)])
def test_control_api_answers_unknown_routes_in_json(esp, method, path, status):
    """An unknown route or method gets its 404/405 as the API's one-line JSON error (was aiohttp's text)."""
    req = urllib.request.Request(esp.control_url + path, data=b"{}", method=method)
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == status
    assert json.loads(err.value.read()) == {"error": f"{method} {path}: {err.value.reason}"}


def test_fake_esp_answers_vrfy_with_junk_bytes_without_an_exception(esp):
    """VRFY with an unparsable address in bytes that are not UTF-8 gets aiosmtpd's 502 echoing it (the
    junk replaced), not a session exception (the strict UTF-8 encode of the echo raised)."""
    with socket.create_connection(("127.0.0.1", esp.smtp_port), timeout=5) as s:
        buf = bytearray()
        assert attacks.read_reply(s, buf).startswith(b"220")
        assert attacks.command(s, buf, b"EHLO c.test").startswith(b"250")
        assert attacks.command(s, buf, b"VRFY @\xad\xfe").startswith(b"502 ")
    assert "Traceback" not in esp.log_path.read_text(errors="replace")


@pytest.mark.parametrize("t", ['"soon"', "1e300"])
def test_report_on_a_ledger_with_a_wrongly_typed_value_is_one_line(tmp_path, t):
    """`mailstorm report` on a damaged ledger (a timestamp that is text, or too big) exits 2 with one line
    naming the file (it was an internal error, exit 3)."""
    (tmp_path / "ledger").mkdir()
    bad = tmp_path / "ledger" / "load-0.jsonl"
    bad.write_text(f'{{"t":{t},"k":"load.submit","src":"load-0","id":"a","ok":true}}\n')
    out = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "report", str(tmp_path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.splitlines()
    assert str(bad) in line and "load.submit" in line


def smtp_exchange(port: int, lines: list[bytes]) -> list[bytes]:
    """Send each line after the previous reply; return every reply line (banner first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        replies = [f.readline()]
        for line in lines:
            s.sendall(line + b"\r\n")
            reply = f.readline()
            while reply[3:4] == b"-":  # multi-line (EHLO)
                reply = f.readline()
            replies.append(reply)
        return replies


@pytest.mark.parametrize("mechanism", [b"AUTH LOGIN", b"AUTH PLAIN"])
def test_fake_esp_answers_an_auth_line_longer_than_the_limit(esp, mechanism):
    """An AUTH answer longer than the line limit is answered 500 5.5.6 (RFC 4954 4) and the session goes
    on; aiosmtpd raised inside challenge_auth and the session died with a traceback (the long fuzz run
    found it)."""
    replies = smtp_exchange(esp.smtp_port, [b"EHLO fuzz", mechanism, b"A" * 5000, b"NOOP", b"QUIT"])
    assert replies[2].startswith(b"334"), replies
    assert replies[3].startswith(b"500 5.5.6"), replies
    assert replies[4].startswith(b"250"), replies  # the session is still served
    assert replies[5].startswith(b"221"), replies
    assert "Traceback" not in esp.log_path.read_text(errors="replace")


def test_fake_esp_closes_a_starttls_session_with_junk_pipelined_after_it(tmp_path):
    """STARTTLS with more than the line limit of junk pipelined after it, then the client's end: the
    session closes at once. The junk sat in aiosmtpd's stream reader, which had paused the socket for
    it, so the handshake waited (60 s) for bytes the paused socket never delivered (the long TLS fuzz
    run found it). RFC 3207 4.2: what comes before the negotiation is discarded."""
    from mailstorm.fake_esp.launch import EspProcess
    from tests.hardening.fuzz import play

    with EspProcess(tmp_path / "ledger", log_path=tmp_path / "esp.log", tls="starttls") as esp:
        for n in (100, 5_000, 20_000):
            result = play(esp.smtp_port, [("send", b"STARTTLS\r\nMaIl " + b"x" * n + b"\r\n")], 5.0)
            assert not result.hung, n
            assert b"220 Ready to start TLS" in result.received
        assert esp.control.counters()["open_sessions"] == 0
    assert "Traceback" not in (tmp_path / "esp.log").read_text(errors="replace")


def test_fake_esp_answers_an_auth_login_that_is_not_utf8(tmp_path):
    """AUTH with a user name that is not UTF-8 gets 535 and the session goes on; the ledger's record of
    the failed login could not be written (surrogates in the name) and the session died with a traceback
    (the long TLS fuzz run found it). An open ESP accepts it, like any login."""
    import base64

    from mailstorm.fake_esp.launch import EspProcess

    token = base64.b64encode(b"\0\xff\xfeuser\0password").decode().encode()
    for auth, expected in ((["user:password"], b"535"), ([], b"235")):
        with EspProcess(tmp_path / f"ledger-{len(auth)}", log_path=tmp_path / "esp.log", auth=auth) as esp:
            replies = smtp_exchange(esp.smtp_port, [b"EHLO fuzz", b"AUTH PLAIN " + token, b"NOOP", b"QUIT"])
            assert replies[2].startswith(expected), replies
            assert replies[3].startswith(b"250"), replies
    assert "Traceback" not in (tmp_path / "esp.log").read_text(errors="replace")


@pytest.mark.parametrize("mode", ["off", "starttls"])
def test_fake_esp_ends_quietly_a_session_it_closed_with_lines_still_buffered(tmp_path, mode):
    """Six unknown commands and an overlong line, pipelined (inside TLS too): aiosmtpd closes after five
    ("too many bogus commands") but goes on reading what was buffered, and the write of its answer (or,
    on a TLS transport, resuming the reading) failed on the closed connection with a traceback (the
    long TLS fuzz run found it). Now the session ends without a word and without one."""
    import ssl

    from mailstorm.fake_esp.launch import EspProcess
    from tests.hardening.fuzz import Secure, play

    steps = [("send", b"BOGUS\r\n" * 6 + b"NOOP\r\n" + b"y" * 3000 + b"\r\n" + b"z" * 3000)]
    with EspProcess(tmp_path / "ledger", log_path=tmp_path / "esp.log", tls=mode) as esp:
        secure = Secure(mode, ssl.create_default_context(cafile=str(esp.ca_path))) if mode != "off" else None
        for _ in range(5):
            assert not play(esp.smtp_port, steps, 5.0, secure=secure).hung
        assert esp.control.counters()["open_sessions"] == 0
    log = (tmp_path / "esp.log").read_text(errors="replace")
    assert "too many bogus commands" in log and "Traceback" not in log


@pytest.mark.parametrize("server", ["esp", "reference"])
def test_an_empty_angle_address_is_malformed_not_a_session_exception(request, server):
    """MAIL FROM:< and RCPT TO:< (a bracket and nothing after it) get 553 malformed address; the email
    parser's IndexError went uncaught through aiosmtpd (500 and a traceback in the log) in both the fake
    ESP and the reference pipeline (the long TLS fuzz run found it)."""
    proc = request.getfixturevalue(server)
    port = proc.smtp_port if server == "esp" else proc.port
    lines = [b"EHLO fuzz", b"MAIL FROM:<", b"MAIL FROM:<a@b.test>", b"RCPT TO:<", b"QUIT"]
    replies = smtp_exchange(port, lines)
    assert replies[2].startswith(b"553"), replies
    assert replies[3].startswith(b"250") and replies[4].startswith(b"553"), replies
    logs = [proc.log_path] if server == "esp" else list(proc.workdir.glob("reference-*.log"))
    assert not any("IndexError" in p.read_text(errors="replace") for p in logs)
