"""DATA in whole reads and the plain-address fast path (mailstorm.fake_esp.smtp_wire): the bytes received
are the bytes the client meant, however the stream is cut into reads (dot-stuffing, a "." line or a
CRLF split across reads, bare LF and CR, a message exactly at the size limit and one byte over), and
every answer is aiosmtpd's own: the same stream gets the same replies and the same content from
aiosmtpd's line-by-line DATA as from ours, and the fake ESP keeps what was sent."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import smtplib
import socket

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.smtp_wire import NOMINAL, TOO_MUCH, FastWire, guard_logs, read_message
from mailstorm.ledger import SHA_HEX_DIGITS, Kind
from mailstorm.replies import MESSAGE_TOO_BIG

LINE_LIMIT = 1001  # aiosmtpd's line_length_limit
PIPELINED = b"NOOP\r\n"  # what a client may send right after the end line, in the same write

# Lines without a CRLF inside: dots (first and elsewhere), bare CR and LF, plain bytes.
lines = st.lists(
    st.lists(st.sampled_from([b".", b"\r", b"\n", b"a", b" ", b"\xff"]), max_size=40).map(b"".join),
    max_size=30,
).filter(lambda ls: not any(b"\r\n" in (line + b"\r\n")[:-2] for line in ls))


def meant(message_lines: list[bytes]) -> bytes:
    """The content the client means: its lines, each ended by CRLF."""
    return b"".join(line + b"\r\n" for line in message_lines)


def stuffed(message_lines: list[bytes]) -> bytes:
    """What the client sends for it: every line starting with "." gets one more, then the end line."""
    return b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in message_lines)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


async def read_in_pieces(pieces: list[bytes], size_limit: int | None):
    """read_message over a stream fed one piece per read (the reader takes each before the next)."""
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    task = asyncio.ensure_future(read_message(reader, size_limit, LINE_LIMIT))
    for piece in pieces:
        reader.feed_data(piece)
        for _ in range(3):  # let the task take this piece alone
            await asyncio.sleep(0)
    reader.feed_eof()
    got = await task
    return got, bytes(reader._buffer)


@settings(max_examples=300, deadline=None)
@given(message=lines, points=st.lists(st.integers(0, 10_000), max_size=12), slack=st.integers(-2, 2))
@example(message=[b".", b"a"], points=[1, 2, 3, 4, 5, 6, 7, 8, 9], slack=0)  # every byte a read
@example(message=[], points=[1, 2], slack=0)  # the end line first, split
def test_any_split_of_the_stream_reads_what_the_client_meant(message, points, slack):
    """Dot-stuffing undone, "." lines and CRLFs split across reads, bare CR/LF kept as content; the size
    limit at exactly the message's size passes and one byte under it gets TOO_MUCH; what was pipelined
    after the end line stays in the stream."""
    sent = stuffed(message)
    limit = max(len(sent) + slack, 1)
    got, left = asyncio.run(read_in_pieces(cut(sent + b".\r\n" + PIPELINED, points), limit))
    if len(sent) > limit:
        assert got == (TOO_MUCH, b"")
    else:
        assert got == (NOMINAL, meant(message))
    assert left == PIPELINED


# -- the same answers as aiosmtpd -----------------------------------------------------------------------
class _Capture:
    def __init__(self) -> None:
        self.content: bytes | None = None

    async def handle_DATA(self, server, session, envelope) -> str:
        self.content = envelope.original_content
        return "250 OK"


class _Fast(FastWire, SMTP):
    pass


async def _closed(reader: asyncio.StreamReader) -> None:
    """Wait for the server's end of the stream after its 221: its socket is closed (none left for the
    garbage collector to warn about once the loop is gone)."""
    while await asyncio.wait_for(reader.read(65536), 10):
        pass


async def _serve_once(cls: type, pieces: list[bytes], limit: int) -> tuple[bytes, bytes | None]:
    """Send one transaction's DATA in ``pieces`` (one write each) to a ``cls`` server; (every reply after
    the 354, the content its handler got)."""
    capture = _Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: cls(capture, data_size_limit=limit, hostname="wire.test", loop=loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await reader.readuntil(b"\r\n")
        writer.write(b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n")
        for _ in range(4):
            await reader.readuntil(b"\r\n")
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
        replies = b""
        while not replies.endswith(b"221 Bye\r\n"):
            line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
            replies += line
        await _closed(reader)
        return replies, capture.content
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


long_lines = st.lists(
    st.one_of(
        lines.map(lambda ls: ls[0] if ls else b""),
        st.integers(990, 1010).map(lambda n: b"x" * n),
        st.sampled_from([b"y" * 1500, b"." + b"z" * 999, b"." * 1001]),
    ),
    max_size=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=st.one_of(lines, long_lines),
    points=st.lists(st.integers(0, 20_000), max_size=6),
    slack=st.integers(-1003, 1003),
)
@example(message=[b"x" * 999], points=[], slack=0)  # the longest line accepted, exactly at the limit
@example(message=[b"x" * 1000], points=[], slack=0)  # one byte too long a line
@example(message=[b"x" * 1000], points=[], slack=-1)  # too long a line that also crosses the limit
@example(message=[b"a", b"x" * 1500], points=[500], slack=-1000)  # the limit crossed before it
@example(message=[b"x" * 999, b"a", b"y" * 1500], points=[], slack=-1503)  # crossed between them
def test_the_same_answers_and_content_as_aiosmtpd(message, points, slack):
    sent = stuffed(message)
    limit = max(len(sent) + slack, 1)
    stream = sent + b".\r\nQUIT\r\n"

    async def both():
        return (
            await _serve_once(SMTP, cut(stream, points), limit),
            await _serve_once(_Fast, cut(stream, points), limit),
        )

    theirs, ours = asyncio.run(both())
    assert ours == theirs
    if ours[0].startswith(b"250"):
        assert ours[1] == meant(message)


# -- addresses ---------------------------------------------------------------------------------------
atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
addresses = st.one_of(
    st.builds(
        lambda local, domain, rest: f"<{local}@{domain}>{rest}",
        st.text(alphabet=atext + ".", min_size=1, max_size=12),
        st.text(alphabet=atext + ".[]", min_size=1, max_size=12),
        st.sampled_from(["", " SIZE=100", "\tBODY=8BITMIME", " (comment) SIZE=1", "x", " ", "\u2003 SIZE=1"]),
    ),
    st.text(alphabet=atext + '<>@. "()\\:,;[]\t', max_size=30),
)


@pytest.fixture(scope="module")
def parsers():
    """Our session and aiosmtpd's, on a loop of their own (aiosmtpd makes one per session otherwise)."""
    loop = asyncio.new_event_loop()
    yield _Fast(_Capture(), loop=loop), SMTP(_Capture(), loop=loop)
    loop.close()


@settings(max_examples=500, deadline=None)
@given(arg=addresses)
@example(arg="<=?utf-8?q?x?=@d.test>")
@example(arg="<a..b@d.test>")
@example(arg="<a@d.test> (c) SIZE=1")
def test_the_plain_address_path_gives_what_aiosmtpd_parses(parsers, arg):
    def outcome(server: SMTP) -> object:
        try:
            return server._getaddr(arg)
        except Exception as exc:  # the email parser fails on some junk: the same failure both ways
            return type(exc)

    ours, theirs = parsers
    assert outcome(ours) == outcome(theirs)


# -- the fake ESP end to end ---------------------------------------------------------------------------
MAX = 64 * 1024  # the module ESP's --max-message-size (conftest)


def _send_raw(port: int, data: bytes) -> bytes:
    """One transaction with ``data`` sent as is after the 354 (dot-stuffed, end line included)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("wire.test")
        s.mail("s@sender.test")
        s.rcpt("r@rcpt.test")
        assert s.docmd("DATA")[0] == 354
        s.send(data)
        code, text = s.getreply()
        return f"{code} {text.decode()}".encode()


def test_the_fake_esp_keeps_the_bytes_sent_at_the_size_limit_and_refuses_one_more(esp):
    """A message of exactly --max-message-size bytes as sent (dot-stuffed lines, bare LF and CR inside)
    is kept with the sha256 of what the client meant; one byte more gets the 552 and is not kept."""
    head = b"X-Mailstorm-Id: wire-at-limit\r\nSubject: t\r\n\r\n..a dot line\r\nbare\nlf and\rcr\r\n"
    body_line = b"y" * 76 + b"\r\n"
    lines, last = divmod(MAX - len(head) - 2, len(body_line))
    data = head + body_line * lines + b"z" * last + b"\r\n"
    assert len(data) == MAX
    content = data.replace(b"\r\n..", b"\r\n.")
    assert _send_raw(esp.port, data + b".\r\n").startswith(b"250")
    (kept,) = [r for r in esp.ledger.records([Kind.ESP_ACCEPTED]) if r["id"] == "wire-at-limit"]
    assert (kept["size"], kept["sha"]) == (len(content), hashlib.sha256(content).hexdigest()[:SHA_HEX_DIGITS])

    one_more = data.replace(b"wire-at-limit", b"wire-over-lim")[:-2] + b"w\r\n"
    assert len(one_more) == MAX + 1
    assert _send_raw(esp.port, one_more + b".\r\n") == str(MESSAGE_TOO_BIG).encode()
    assert not [r for r in esp.ledger.records([Kind.ESP_ACCEPTED]) if r["id"] == "wire-over-lim"]


# -- logs ------------------------------------------------------------------------------------------------
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_guarded_logs_still_mask_auth_data_when_they_log():
    """With the guard, a logger that logs still gets every command line, AUTH data masked; one that
    drops the records gets none."""
    guard_logs()
    records, logger = _Records(), logging.getLogger("mail.log")
    logger.addHandler(records)
    level = logger.level

    async def session() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Fast(_Capture(), loop=loop), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        await reader.readuntil(b"\r\n")
        writer.write(b"AUTH PLAIN c2VjcmV0LXBhc3N3b3Jk\r\nQUIT\r\n")
        while not (await reader.readuntil(b"\r\n")).startswith(b"221"):
            pass
        await _closed(reader)
        writer.close()
        server.close()
        await server.wait_closed()

    try:
        logger.setLevel(logging.INFO)
        asyncio.run(session())
        said = [line for line in records.lines if "AUTH PLAIN" in line]
        assert said and all("********" in line and "c2Vj" not in line for line in said)
        records.lines.clear()
        logger.setLevel(logging.WARNING)
        asyncio.run(session())
        assert not [line for line in records.lines if "AUTH" in line]
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
