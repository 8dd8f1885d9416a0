"""Plays one raw SMTP session (tests/strategies.py ``smtp_sessions``) against a server and judges it.

The client never blocks on a full socket: it writes and reads at once (select), so a server that answers
pipelined commands while the client is still sending cannot deadlock the test. After the steps it ends the
session as any client may (``\\r\\n.\\r\\nQUIT``, then its own end of the stream), and the server must close
within the per-session deadline: a session still open then is a hang. Every byte the server sent must
read as SMTP reply lines.
"""

from __future__ import annotations

import re
import select
import socket
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


def _pump(sock: socket.socket, out: bytes, got: bytearray, until: float, *, to_eof: bool) -> bool:
    """Send ``out`` while reading; with ``to_eof``, then read until the server closes. True on EOF or a
    reset (the server ended the session), False when ``until`` passed first."""
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


def play(port: int, steps: list[tuple[str, bytes]], deadline_s: float = 10.0) -> Session:
    """Run ``steps`` against 127.0.0.1:``port`` within ``deadline_s``."""
    t0 = time.monotonic()
    until = t0 + deadline_s
    got = bytearray()
    result = Session()
    sock = socket.create_connection(("127.0.0.1", port), timeout=deadline_s)
    sock.setblocking(False)
    try:
        closed = False
        for kind, data in steps:
            if kind == "half_close":
                break
            if _pump(sock, data, got, until, to_eof=False):
                closed = True
                break
        if not closed:
            if not any(kind == "half_close" for kind, _ in steps):
                closed = _pump(sock, CLOSING, got, until, to_eof=False)
            if not closed:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                closed = _pump(sock, b"", got, until, to_eof=True)
        result.closed = closed
        result.hung = not closed
    finally:
        sock.close()
    result.received = bytes(got)
    result.seconds = time.monotonic() - t0
    return result
