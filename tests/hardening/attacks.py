"""Resource attacks on an SMTP server, each with real sockets and a bound on its own run time.

- ``slowloris``: many connections, each trickling one byte a second into a command (or into a DATA
  body) that never ends; returns how long the server kept each open.
- ``big_message``: one message of ``size`` bytes streamed without a SIZE= declaration; the final reply.
- ``many_recipients``: one envelope with ``count`` RCPT commands (pipelined in batches); replies by code.
- ``many_connections``: ``count`` connections opened at once and held; banner replies by code.

The hardening tests assert on the results, and bench/bench_attacks.py prints them with the server's
peak memory (tests.hardening.support.PeakMemory).
"""

from __future__ import annotations

import select
import socket
import time
from collections import Counter

HOST = "127.0.0.1"


def read_reply(sock: socket.socket, buf: bytearray) -> bytes:
    """One whole (multi-line) reply; b"" when the server closed first."""
    while True:
        lines = bytes(buf).split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if line[3:4] != b"-":
                out = b"\r\n".join(lines[: i + 1])
                del buf[: len(out) + 2]
                return out
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        buf += chunk


def command(sock: socket.socket, buf: bytearray, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return read_reply(sock, buf)


def _open_envelope(sock: socket.socket, buf: bytearray) -> None:
    """EHLO, MAIL, one RCPT; asserts each is accepted."""
    for line in (b"EHLO attacker.test", b"MAIL FROM:<a@attacker.test>", b"RCPT TO:<r@rcpt.test>"):
        reply = command(sock, buf, line)
        assert reply.startswith(b"250"), (line, reply)


def slowloris(port: int, connections: int, *, in_data: bool = False, limit_s: float = 60.0) -> list[float]:
    """Open ``connections`` sessions that each send one byte a second and never finish their line (after
    DATA with ``in_data``); return each one's lifetime (s) until the server closed it. Sessions still
    open at ``limit_s`` count as ``limit_s``."""
    socks: dict[socket.socket, float] = {}
    lifetimes: list[float] = []
    try:
        for _ in range(connections):
            s = socket.create_connection((HOST, port), timeout=10)
            buf = bytearray()
            assert read_reply(s, buf).startswith(b"220")
            if in_data:
                _open_envelope(s, buf)
                assert command(s, buf, b"DATA").startswith(b"354")
            s.setblocking(False)
            socks[s] = time.monotonic()
        t0 = time.monotonic()
        next_byte = t0
        while socks and time.monotonic() - t0 < limit_s:
            now = time.monotonic()
            if now >= next_byte:
                next_byte = now + 1.0  # a byte a second per connection
                for s in list(socks):
                    try:
                        s.send(b"X")
                    except OSError:
                        pass  # closed under us: the read below sees it
            readable, _, _ = select.select(list(socks), [], [], max(0.0, next_byte - time.monotonic()))
            for s in readable:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the server closed it (anything it said first, a 421, is read before)
                    lifetimes.append(time.monotonic() - socks.pop(s))
                    s.close()
        lifetimes += [limit_s] * len(socks)
    finally:
        for s in socks:
            s.close()
    return lifetimes


def big_message(port: int, size: int, *, timeout: float = 120.0) -> bytes:
    """Stream one message of ``size`` bytes (998-character lines), no SIZE=; the reply to its end."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        buf = bytearray()
        assert read_reply(s, buf).startswith(b"220")
        _open_envelope(s, buf)
        assert command(s, buf, b"DATA").startswith(b"354")
        line = b"x" * 998 + b"\r\n"
        chunk = b"Subject: big\r\n\r\n" + line * 1000  # ~1 MB per write
        sent = 0
        while sent < size:
            s.sendall(chunk)
            sent += len(chunk)
        s.sendall(b".\r\n")
        return read_reply(s, buf)


def many_recipients(port: int, count: int, *, batch: int = 500) -> Counter[int]:
    """One envelope, ``count`` RCPT commands pipelined ``batch`` at a time; the count of each reply code."""
    codes: Counter[int] = Counter()
    with socket.create_connection((HOST, port), timeout=30) as s:
        buf = bytearray()
        assert read_reply(s, buf).startswith(b"220")
        assert command(s, buf, b"EHLO attacker.test").startswith(b"250")
        assert command(s, buf, b"MAIL FROM:<a@attacker.test>").startswith(b"250")
        for start in range(0, count, batch):
            n = min(batch, count - start)
            s.sendall(b"".join(b"RCPT TO:<r%d@rcpt.test>\r\n" % (start + i) for i in range(n)))
            for _ in range(n):
                reply = read_reply(s, buf)
                codes[int(reply[:3]) if reply else 0] += 1
        command(s, buf, b"QUIT")
    return codes


def many_connections(port: int, count: int, *, timeout: float = 30.0) -> Counter[int]:
    """Open ``count`` connections at once and hold them until each has its banner; codes counted (0 for a
    connection refused or closed without a reply)."""
    socks: list[socket.socket] = []
    codes: Counter[int] = Counter()
    try:
        for _ in range(count):
            try:
                socks.append(socket.create_connection((HOST, port), timeout=timeout))
            except OSError:
                codes[0] += 1
        deadline = time.monotonic() + timeout
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                reply = read_reply(s, bytearray())
            except OSError:
                reply = b""
            codes[int(reply[:3]) if reply else 0] += 1
    finally:
        for s in socks:
            s.close()
    return codes
