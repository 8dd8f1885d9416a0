"""Malformed SMTP input (bad commands, 10k-character lines, binary junk, oversize messages) never crashes
or hangs the fake ESP: every input gets an answer or a clean close, and the next client is served."""

from __future__ import annotations

import smtplib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.ledger import Kind
from mailstorm.replies import MESSAGE_TOO_BIG
from tests.fake_esp.clients import message, smtp_transaction

MAX = 64 * 1024  # the module ESP's --max-message-size (conftest)


class Raw:
    """A raw socket session that reads whole replies (multi-line aware) with a timeout: a hang fails."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""
        self.banner = self.reply()

    def reply(self) -> bytes:
        while True:
            lines = self.buf.split(b"\r\n")
            for i, line in enumerate(lines[:-1]):
                if line[3:4] != b"-":
                    out = b"\r\n".join(lines[: i + 1])
                    self.buf = b"\r\n".join(lines[i + 1 :])
                    return out
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                # The server closed (aiosmtpd after too many unrecognized commands) and the kernel
                # answered what the client sent after that with a reset: a close, not a failure.
                return b""
            if not chunk:
                return b""
            self.buf += chunk

    def cmd(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def served(port: int) -> bool:
    return smtp_transaction(port, "after-junk").codes.get("eod") == 250


def test_bad_commands_get_errors(esp):
    """Unknown commands and commands out of sequence get 5yz replies; the session goes on."""
    with Raw(esp.port) as s:
        assert s.cmd(b"FROB nicate\r\n").startswith(b"500")
        assert s.cmd(b"MAIL FROM:<a@b.test>\r\n")[:1] == b"5"  # before EHLO
        assert s.cmd(b"EHLO c.test\r\n").startswith(b"250")
        assert s.cmd(b"RCPT TO:<a@b.test>\r\n").startswith(b"503")  # before MAIL
        assert s.cmd(b"DATA\r\n").startswith(b"503")
        assert s.cmd(b"MAIL FROM:\r\n")[:1] == b"5"
        assert s.cmd(b"\r\n").startswith(b"500")
        assert s.cmd(b"NOOP\r\n").startswith(b"250")
    assert served(esp.port)


def test_ten_thousand_character_lines(esp):
    """A 10k-character command line gets 500 and the session goes on; so does a 10k line inside DATA."""
    with Raw(esp.port) as s:
        assert s.cmd(b"EHLO " + b"a" * 10_000 + b"\r\n").startswith(b"500")
        assert s.cmd(b"EHLO c.test\r\n").startswith(b"250")
        assert s.cmd(b"MAIL FROM:<a@b.test>\r\n").startswith(b"250")
        assert s.cmd(b"RCPT TO:<c@d.test>\r\n").startswith(b"250")
        assert s.cmd(b"DATA\r\n").startswith(b"354")
        assert s.cmd(b"Subject: x\r\n\r\n" + b"y" * 10_000 + b"\r\n.\r\n").startswith(b"500")
        assert s.cmd(b"NOOP\r\n").startswith(b"250")
    assert served(esp.port)


def test_binary_junk(esp):
    """Binary junk (NULs, high bytes, bare CRs and LFs) gets answers or a clean close, never a hang."""
    junk = bytes(range(256)) * 20 + b"\r\n" + b"\x00\xff\r\r\n\n" * 100 + b"\r\n"
    with Raw(esp.port) as s:
        s.sock.sendall(junk)
        replies = []
        while (r := s.reply()) and len(replies) < 500:
            replies.append(r)
            if r.startswith(b"502"):  # aiosmtpd: too many unrecognised commands, goodbye
                break
        assert replies and all(r[:1] in (b"5", b"2") for r in replies)
    assert served(esp.port)


def test_message_over_the_size_limit_gets_552(esp):
    """A message over --max-message-size gets the project's 552 after the data, recorded in the ledger."""
    with smtplib.SMTP("127.0.0.1", esp.port, timeout=10) as s:
        s.ehlo("c.test")
        del s.esmtp_features["size"]  # do not declare SIZE=: send it all, as a careless client would
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@b.test", ["c@d.test"], message("big-1", size=MAX + 10_000))
        assert err.value.smtp_code == 552
        assert err.value.smtp_error.decode() == str(MESSAGE_TOO_BIG).split(" ", 1)[1]
        s.sendmail("a@b.test", ["c@d.test"], message("small-1"))  # the session goes on
    assert any(r["code"] == 552 for r in esp.ledger.records([Kind.ESP_REPLIED]))
    ids = {r["id"] for r in esp.ledger.records([Kind.ESP_ACCEPTED])}
    assert "small-1" in ids and "big-1" not in ids


def test_declared_size_over_the_limit_gets_552_at_mail(esp):
    """A MAIL FROM with SIZE= over the limit is refused at once with 552 (RFC 1870)."""
    with Raw(esp.port) as s:
        assert s.cmd(b"EHLO c.test\r\n").startswith(b"250")
        assert s.cmd(f"MAIL FROM:<a@b.test> SIZE={MAX * 10}\r\n".encode()).startswith(
            str(MESSAGE_TOO_BIG).encode()
        )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=8))
def test_fuzzed_command_lines_never_hang(esp, lines):
    """Any sequence of arbitrary byte lines gets one answer per line (or a clean close) within a timeout."""
    with Raw(esp.port) as s:
        for line in lines:
            line = line.replace(b"\r", b"").replace(b"\n", b"")
            if line.upper().startswith((b"DATA", b"QUIT", b"AUTH", b"STARTTLS", b"BDAT")):
                continue  # commands that legitimately change what the server waits for
            r = s.cmd(line + b"\r\n")
            if not r:
                break
            assert r[:1] in (b"2", b"3", b"4", b"5")
    assert esp.proc.alive()
