"""Plays one raw SMTP session (tests/strategies.py ``smtp_sessions``) against a server and judges it.

The client never blocks on a full socket: it writes and reads at once (select), so a server that answers
pipelined commands while the client is still sending cannot deadlock the test. After the steps it ends the
session as any client may (``\\r\\n.\\r\\nQUIT``, then its own end of the stream), and the server must close
within the per-session deadline: a session still open then is a hang. Every byte the server sent must
read as SMTP reply lines.

Over TLS (``secure``: a fake ESP that requires it), the session first gets where production clients get
(STARTTLS after EHLO, or TLS from the first byte; then, when ``login`` is given, EHLO and AUTH PLAIN), and
the fuzzed steps go inside the TLS session: the bytes are encrypted and decrypted through an
``ssl.SSLObject`` over memory BIOs, so the same non-blocking pump drives both.
"""

from __future__ import annotations

import base64
import re
import select
import socket
import ssl
import time
from dataclasses import dataclass

REPLY_LINE = re.compile(rb"^[2-5][0-9][0-9](?:[ -].*)?$")
CLOSING = b"\r\n.\r\nQUIT\r\n"


@dataclass
class Session:
    """What one fuzzed session did: whether the server closed in time, and what it sent."""

    closed: bool = False
    hung: bool = False
    received: bytes = b""
    seconds: float = 0.0

    def bad_lines(self) -> list[bytes]:
        """Lines the server sent that are not SMTP replies (the last, unterminated piece is ignored)."""
        lines = self.received.split(b"\r\n")[:-1]
        return [line for line in lines if not REPLY_LINE.match(line)]


@dataclass
class Secure:
    """How a fuzzed session reaches the inside of TLS: ``mode`` starttls or implicit, trusting ``context``;
    ``login`` (user, password) to AUTH PLAIN with before the fuzzed steps, or None."""

    mode: str
    context: ssl.SSLContext
    login: tuple[str, str] | None = None


class _Tls:
    """TLS over memory BIOs: ``encode`` plaintext to records, ``decode`` records to plaintext."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")
        self.closed = False

    def encode(self, data: bytes) -> bytes:
        if data and not self.closed:
            try:
                self.obj.write(data)
            except ssl.SSLError:
                self.closed = True
        return self.outgoing.read()

    def decode(self, data: bytes) -> bytes:
        """Plaintext from ``data``; an empty ``data`` is the end of the stream."""
        if data:
            self.incoming.write(data)
        else:
            self.incoming.write_eof()
        out = bytearray()
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            out += chunk
        return bytes(out)


def _pump(
    sock: socket.socket, out: bytes, got: bytearray, until: float, *, to_eof: bool, tls: _Tls | None = None
) -> bool:
    """Send ``out`` while reading; with ``to_eof``, then read until the server closes. True on EOF or a
    reset (the server ended the session), False when ``until`` passed first."""
    if tls is not None:
        out = tls.encode(out)
    view = memoryview(out)
    while view or to_eof:
        left = until - time.monotonic()
        if left <= 0:
            return False
        readable, writable, _ = select.select([sock], [sock] if view else [], [], min(left, 1.0))
        if readable:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ConnectionAbortedError):
                return True
            if tls is not None:
                plain = tls.decode(chunk)
                got += plain
                if not chunk or tls.closed:
                    return True
                continue
            if not chunk:
                return True
            got += chunk
        if writable and view:
            try:
                sent = sock.send(view[:65536])
            except (BrokenPipeError, ConnectionResetError):
                return True  # the server closed (after 421/221, or on junk): fine, if it did so cleanly
            view = view[sent:]
    return False


def _read_reply(sock: socket.socket, tls: _Tls | None, until: float, buf: bytearray) -> bytes:
    """Read (blocking, to ``until``) one whole SMTP reply, multi-line included; raises on a closed stream."""
    while True:
        lines = bytes(buf).split(b"\r\n")
        for n, line in enumerate(lines[:-1]):
            if REPLY_LINE.match(line) and line[3:4] != b"-":
                reply = b"\r\n".join(lines[: n + 1]) + b"\r\n"
                del buf[: len(reply)]
                return reply
        sock.settimeout(max(0.01, until - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during the set-up")
        buf += tls.decode(chunk) if tls is not None else chunk


def _say(sock: socket.socket, tls: _Tls | None, line: bytes, until: float, buf: bytearray) -> bytes:
    sock.sendall(tls.encode(line + b"\r\n") if tls is not None else line + b"\r\n")
    return _read_reply(sock, tls, until, buf)


def _handshake(sock: socket.socket, tls: _Tls, until: float) -> None:
    while True:
        try:
            tls.obj.do_handshake()
            sock.sendall(tls.outgoing.read())
            return
        except ssl.SSLWantReadError:
            sock.sendall(tls.outgoing.read())
            sock.settimeout(max(0.01, until - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed during the handshake") from None
            tls.incoming.write(chunk)


def secure_start(sock: socket.socket, secure: Secure, until: float) -> _Tls:
    """Get a new connection to where a production client starts sending: TLS up, EHLO said, logged in."""
    buf = bytearray()
    tls = _Tls(secure.context)
    if secure.mode == "starttls":
        _read_reply(sock, None, until, buf)
        _say(sock, None, b"EHLO fuzz.test", until, buf)
        if not _say(sock, None, b"STARTTLS", until, buf).startswith(b"220"):
            raise ConnectionError("STARTTLS refused")
        _handshake(sock, tls, until)
    else:
        _handshake(sock, tls, until)
        _read_reply(sock, tls, until, buf)
    _say(sock, tls, b"EHLO fuzz.test", until, buf)
    if secure.login is not None:
        user, password = secure.login
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        if not _say(sock, tls, f"AUTH PLAIN {token}".encode(), until, buf).startswith(b"235"):
            raise ConnectionError("AUTH refused")
    return tls


def play(
    port: int, steps: list[tuple[str, bytes]], deadline_s: float = 10.0, secure: Secure | None = None
) -> Session:
    """Run ``steps`` against 127.0.0.1:``port`` within ``deadline_s`` (inside TLS with ``secure``)."""
    t0 = time.monotonic()
    until = t0 + deadline_s
    got = bytearray()
    result = Session()
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    try:
        tls = secure_start(sock, secure, until) if secure is not None else None
        sock.setblocking(False)
        closed = False
        for kind, data in steps:
            if kind == "half_close":
                break
            if _pump(sock, data, got, until, to_eof=False, tls=tls):
                closed = True
                break
        if not closed:
            if not any(kind == "half_close" for kind, _ in steps):
                closed = _pump(sock, CLOSING, got, until, to_eof=False, tls=tls)
            if not closed:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                closed = _pump(sock, b"", got, until, to_eof=True, tls=tls)
        result.closed = closed
        result.hung = not closed
    finally:
        sock.close()
    result.received = bytes(got)
    result.seconds = time.monotonic() - t0
    return result
