"""What aiosmtpd reads slowly, read fast: a DATA message in whole reads, and the plain address of MAIL
FROM and RCPT TO. ``FastWire`` is a mixin for aiosmtpd's ``SMTP`` class (before it in the bases); the
state machine, the commands, the hooks and every answer stay aiosmtpd's.

DATA. aiosmtpd reads a message one line at a time (a readuntil per line). ``read_message`` takes the
stream in whole reads up to the end of the data (the first "." line: ".\\r\\n" at the start or
"\\r\\n.\\r\\n"), gives back to the stream what the client pipelined after it, and then judges the
message as aiosmtpd's line loop does, in the same order: a line longer than ``line_length_limit`` (1001
with its CRLF) is a 500, more than ``data_size_limit`` bytes (counted as sent, dot-stuffed, CRLFs
included) a 552, whichever comes first in the stream; otherwise the content is dot-unstuffed (the
first "." of every line removed). Lines end at CRLF only: a bare LF or CR is content. Memory stays
bounded by the size limit: past it (and a line's length, to know which answer comes first) the rest
of an oversized message is read and dropped. A connection lost mid-DATA ends the session as in
aiosmtpd.

Addresses. aiosmtpd parses every address with the email package's header parser and builds a typing
Protocol class on each call (~50 us an address here); ``<local@domain>`` with dot-atom parts, which
nearly every client sends, parses to the same address and rest with one regex; anything else goes to
aiosmtpd's parser.

Logs. aiosmtpd masks AUTH data in the arguments of two log calls per command line before the logger
drops them (~15 us a line here); ``guard_logs()`` makes it ask the logger first (what is logged is the
same, masked as before).

Connections. aiosmtpd's ``SMTP.__init__`` lists, for every connection, the session's ``smtp_*``
commands and the handler's ``handle_*`` hooks with ``dir()``, and both objects' ``auth_*`` mechanisms
with ``inspect.getmembers`` (which reads every attribute of both): ~100 us a connection here, for what
the classes alone decide. ``cache_introspection()`` gives aiosmtpd's module per-class cached forms of
the two (for aiosmtpd 1.4.6, whose ``__init__`` was read; another version keeps its own).
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import inspect
import logging
import re
import types
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING

from mailstorm.replies import DATA_GO_AHEAD

log = logging.getLogger("mail.log")  # aiosmtpd's: its DATA loop logs a lost connection there

READ_SIZE = 256 * 1024
_SPLIT_MAX = 64 * 1024  # up to this size a message is judged on a split into lines (a copy)
_END = b"\r\n.\r\n"
_DATA_GO_AHEAD = str(DATA_GO_AHEAD)
# aiosmtpd's own answers to a DATA too long a line or too much data (push() replaces the 552's text).
_LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
_TOO_MUCH = "552 Error: Too much mail data"

NOMINAL, TOO_LONG, TOO_MUCH = "nominal", "too long", "too much"

# RFC 5322 atext; a dot-atom is atexts joined by single dots.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*)>")


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def guard_logs() -> None:
    """Make aiosmtpd's ``sanitized_log`` skip the masking when its logger would drop the record."""
    masking = aiosmtpd.smtp.sanitized_log
    if getattr(masking, "guarded", False):
        return

    def sanitized_log(func: Any, msg: Any, *args: Any, **kwargs: Any) -> None:
        logger, level = getattr(func, "__self__", None), _LEVELS.get(getattr(func, "__name__", ""))
        if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
            return
        masking(func, msg, *args, **kwargs)

    sanitized_log.guarded = True  # type: ignore[attr-defined]
    aiosmtpd.smtp.sanitized_log = sanitized_log


CACHED_FOR = "1.4.6"  # the aiosmtpd whose SMTP.__init__ these forms were written against


@functools.cache
def _class_names(cls: type) -> tuple[str, ...]:
    return tuple(builtins.dir(cls))


def _dir(obj: Any) -> list[str]:
    """``dir(obj)`` for an object with the default ``__dir__``: its class's names (listed once per
    class) and its own attributes'."""
    if type(obj).__dir__ is not object.__dir__:
        return builtins.dir(obj)
    return sorted({*_class_names(type(obj)), *getattr(obj, "__dict__", ())})


def _auth_members(obj: Any) -> list[tuple[str, Any]]:
    """``inspect.getmembers(obj)`` as its one caller in aiosmtpd uses it: the ``auth_*`` members only."""
    return [(name, getattr(obj, name)) for name in _dir(obj) if name.startswith("auth_")]


def cache_introspection() -> None:
    """aiosmtpd's module looks up ``dir`` and ``inspect`` in its own namespace first: give it the cached
    forms (once per process; only for the aiosmtpd version they were written against)."""
    if aiosmtpd.__version__ != CACHED_FOR or "dir" in vars(aiosmtpd.smtp):
        return
    aiosmtpd.smtp.dir = _dir  # type: ignore[attr-defined]
    aiosmtpd.smtp.inspect = types.SimpleNamespace(  # type: ignore[attr-defined]
        getmembers=_auth_members, signature=inspect.signature
    )


def verdict(data: bytes | bytearray, size_limit: int | None, line_limit: int) -> str:
    """How aiosmtpd's line loop ends on ``data`` (the DATA bytes before the end line, or those so far):
    NOMINAL, TOO_LONG or TOO_MUCH, the first in the stream's order. aiosmtpd's reader refuses a line
    longer than ``line_limit`` before it counts its bytes (TOO_LONG first); a line of ``line_limit - 1``
    or ``line_limit`` bytes before its CRLF is counted, then refused."""
    if len(data) <= _SPLIT_MAX:  # the usual message: one split, and only its size counts
        lines = data.split(b"\r\n")  # the last: the unfinished line (b"" when data ends with CRLF)
        if max(map(len, lines)) + 2 <= line_limit:
            return TOO_MUCH if size_limit and len(data) - len(lines[-1]) > size_limit else NOMINAL
    total = start = 0  # line by line, without a copy (a big message is judged in place)
    while (end := data.find(b"\r\n", start)) >= 0:
        if end - start > line_limit:
            return TOO_LONG
        total += end - start + 2
        if size_limit and total > size_limit:
            return TOO_MUCH
        if end - start + 2 > line_limit:
            return TOO_LONG
        start = end + 2
    return TOO_LONG if len(data) - start > line_limit else NOMINAL


def unstuff(data: bytes) -> bytes:
    """RFC 5321 4.5.2: remove the first "." of every line."""
    content = data.replace(b"\r\n.", b"\r\n")
    return content[1:] if content.startswith(b".") else content


async def read_message(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> tuple[str, bytes] | None:
    """Read one DATA message from ``reader`` (after the 354): (verdict, content: unstuffed when NOMINAL,
    else b""), or None when the stream ended first. What follows the end line stays in ``reader``."""
    buf = bytearray()
    state = NOMINAL
    start = True  # buf begins where the data begins (a "." line there ends it)
    seen = 0  # buf[:seen] holds no end (but its last 4 bytes may begin one)
    # Past this many bytes with no end, the message is over the limit and which answer comes first is
    # known (verdict): the rest is dropped as it arrives.
    judge_at = size_limit + line_limit + 8 if size_limit else None
    while True:
        chunk = await reader.read(READ_SIZE)
        if not chunk:
            return None
        buf += chunk
        if start and buf[:3] == b".\r\n":
            cut, stop = 0, 3
            break
        i = buf.find(_END, seen)
        if i >= 0:
            cut, stop = i + 2, i + 5
            break
        seen = max(len(buf) - 4, 0)
        if state == NOMINAL and judge_at is not None and len(buf) > judge_at:
            state = verdict(buf, size_limit, line_limit)
        if state != NOMINAL and len(buf) > 4:
            del buf[:-4]  # an end may begin in the last 4 bytes
            start, seen = False, 0
    if stop < len(buf):  # pipelined after the end: the next command's, back to the stream
        reader._buffer[:0] = buf[stop:]  # type: ignore[attr-defined]
    if state != NOMINAL:
        return state, b""
    del buf[cut:]
    data = bytes(buf)
    del buf[:]
    state = verdict(data, size_limit, line_limit)
    return (NOMINAL, unstuff(data)) if state == NOMINAL else (state, b"")


class FastWire:
    """aiosmtpd's DATA and address parsing, fast (module docstring); put before ``SMTP`` in the bases."""

    async def smtp_DATA(self, arg: str) -> None:
        smtp: Any = self
        if smtp._decode_data:  # content as text: aiosmtpd's own loop (the fake ESP keeps bytes)
            await super().smtp_DATA(arg)  # type: ignore[misc]
            return
        # aiosmtpd's checks and answers, in its order.
        if await smtp.check_helo_needed() or await smtp.check_auth_needed("DATA"):
            return
        if not smtp.envelope.rcpt_tos:
            await smtp.push("503 Error: need RCPT command")
            return
        if arg:
            await smtp.push("501 Syntax: DATA")
            return
        await smtp.push(_DATA_GO_AHEAD)
        try:
            got = await read_message(smtp._reader, smtp.data_size_limit, smtp.line_length_limit)
        except asyncio.CancelledError:
            log.info("Connection lost during DATA")
            smtp._writer.close()
            raise
        if got is None:  # the client ended the stream mid-DATA
            smtp._writer.close()
            return
        state, content = got
        if state != NOMINAL:
            await smtp.push(_LINE_TOO_LONG if state == TOO_LONG else _TOO_MUCH)
            smtp._set_post_data_state()
            return
        smtp.envelope.content = smtp.envelope.original_content = content
        status = await smtp._call_handler_hook("DATA")
        smtp._set_post_data_state()
        await smtp.push("250 OK" if status is MISSING else status)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        m = _PLAIN_ADDRESS.match(arg)
        # "=?" may begin an encoded word, which the parser decodes; a local-part limit: aiosmtpd's check.
        if m is None or "=?" in m.group(1) or self.local_part_limit:  # type: ignore[attr-defined]
            return super()._getaddr(arg)  # type: ignore[misc]
        rest = arg[m.end() :]
        # The parser also takes the whitespace after ">" (and comments: left to it).
        if rest[:1] in (" ", "\t"):
            rest = rest.lstrip()
        if rest[:1] == "(":
            return super()._getaddr(arg)  # type: ignore[misc]
        return m.group(1), rest
