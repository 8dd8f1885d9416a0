"""How a message carries its correlation id through a pipeline, and how the fake ESP reads it back.

A scenario names the carrier (``load.correlation``); the load writes it and the fake ESP reads it:

- ``header`` (default): the ``X-Mailstorm-Id: <id>`` header (``mailstorm.ledger.CORRELATION_HEADER``),
  the Message-ID as fallback. A pipeline that rebuilds messages from templates loses both.
- ``recipient``: every envelope recipient plus-addressed with the id, ``local+<id>@domain`` (the
  delimiter Postfix, Gmail and most ESPs know). A pipeline must keep the recipient to deliver at all, so
  this survives header and body rewriting. The id is unique per message, so each address is too. RFC
  5321 4.5.3.1.1 allows 64 octets of local part: keep scenario names short (the id is
  ``<YYYYmmdd-HHMMSS>-<name>-<worker>-<seq>``); most MTAs take longer ones anyway.
- ``body``: the token ``[mailstorm:<id>]`` on the first line of the text part. Survives header
  rewriting when the text is kept; only characters that quoted-printable leaves alone.

The load always writes the header as well, so a SUT's own records (the reference pipeline, Postfix's
header_checks) keep their ids. The ESP reads the named carrier first, then the header, then the
Message-ID: a carrier that did not survive leaves the header's chance intact.

Plain module: the load side (gevent), the fake ESP (asyncio) and the tests import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

Correlation = Literal["header", "recipient", "body"]
RECIPIENT_DELIMITER = "+"
_BODY_TOKEN = "[mailstorm:{}]"
# An id as the load makes it: run directory name (letters, digits, "_", ".", "-"), worker and sequence.
_BODY_RE = re.compile(rb"\[mailstorm:([A-Za-z0-9_.-]+)\]")


def tag_recipient(address: str, cid: str) -> str:
    """``user@example.net`` -> ``user+<cid>@example.net``."""
    local, at, domain = address.rpartition("@")
    if not at:
        return f"{address}{RECIPIENT_DELIMITER}{cid}"
    return f"{local}{RECIPIENT_DELIMITER}{cid}@{domain}"


def id_from_recipients(rcpts: Iterable[str]) -> str | None:
    """The id of the first plus-addressed recipient (``local+<id>@domain``), or None."""
    for rcpt in rcpts:
        local = rcpt.strip().strip("<>").rpartition("@")[0]
        _, plus, tag = local.partition(RECIPIENT_DELIMITER)
        if plus and tag:
            return tag
    return None


def body_token(cid: str) -> str:
    return _BODY_TOKEN.format(cid)


def id_from_body(content: bytes) -> str | None:
    """The id of the first ``[mailstorm:<id>]`` token anywhere in ``content``, or None."""
    m = _BODY_RE.search(content)
    return m.group(1).decode("ascii") if m else None


def carried_id(mode: Correlation, rcpts: Iterable[str], content: bytes) -> str | None:
    """The id the named carrier holds (None for ``header``: the caller reads headers itself)."""
    if mode == "recipient":
        return id_from_recipients(rcpts)
    if mode == "body":
        return id_from_body(content)
    return None
