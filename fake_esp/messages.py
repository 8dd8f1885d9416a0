"""What the ESP received: the latest accepted messages of one worker, kept in memory, and the query of
``GET /messages`` (filters, paging) that the control API answers from them.

What is kept, per worker: the last ``keep`` messages (``--keep-messages``, default 10,000; 0 keeps none),
oldest dropped first. Of each: its id (``<worker>-<n>``), the time it was accepted, protocol and API,
envelope sender and recipients, correlation id, Message-ID, size, sha256, the ESP's message id (HTTP
APIs) and, for SMTP, the first ``HEADER_BYTES`` of its header block (headers past that are not
searchable). Bodies are never held in memory: with ``--store-bodies DIR`` they are on disk as
``DIR/<sha256>.eml`` and the control API reads them from there. A message of an HTTP API has no
header block here (its API request is not MIME), so only its envelope and ids are searchable.

At the defaults a worker holds at most about 10,000 x (2 KiB + ~0.4 KiB) = ~25 MB.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

from mailstorm.errors import ConfigError

KEEP_DEFAULT = 10_000
HEADER_BYTES = 2048
LIMIT_DEFAULT = 50
LIMIT_MAX = 1000
_UNFOLD = re.compile(rb"\r?\n[ \t]+")


def header_values(head: bytes, low: bytes, name: bytes) -> Iterator[bytes]:
    """The values of header ``name`` (lower case) in a header block (``low``: the block lowered),
    unfolded and stripped; by substring search in C, not a parse (10,000 messages per query). A header
    cut by the HEADER_BYTES limit is left out."""
    cut = len(head) >= HEADER_BYTES
    key = b"\n" + name + b":"

    def line_after(pos: int) -> int:
        i = low.find(key, pos)
        return i + 1 if i >= 0 else -1

    at = 0 if low.startswith(name + b":") else line_after(0)
    while at >= 0:
        start = at + len(name) + 1
        end = head.find(b"\n", start)
        while end >= 0 and head[end + 1 : end + 2] in (b" ", b"\t"):  # a folded line goes on
            end = head.find(b"\n", end + 1)
        if end < 0 and cut:
            return
        yield _UNFOLD.sub(b" ", head[start : end if end >= 0 else len(head)]).strip()
        if end < 0:
            return
        at = line_after(end)


class Received(NamedTuple):
    """One accepted message, as kept (a tuple: made on every accepted message, it must be cheap)."""

    id: str
    t: float  # epoch seconds
    proto: str
    api: str | None
    sender: str
    to: tuple[str, ...]
    cid: str | None
    mid: str | None
    size: int
    sha: str
    esp_id: str | None
    head: bytes  # the header block's first HEADER_BYTES (b"" for an HTTP API's message)

    def headers(self) -> list[tuple[str, str]]:
        """(name, value) pairs in order; a header cut by the HEADER_BYTES limit is left out."""
        block = self.head
        cut = len(block) >= HEADER_BYTES
        lines = _UNFOLD.sub(b" ", block).split(b"\n")
        if cut:
            lines = lines[:-1]
        out = []
        for line in lines:
            name, sep, value = line.rstrip(b"\r").partition(b":")
            if sep and name and b" " not in name:
                out.append((name.decode("ascii", "replace"), value.strip().decode("utf-8", "replace")))
        return out

    def as_dict(self, headers: bool = False) -> dict[str, Any]:
        subject = next(header_values(self.head, self.head.lower(), b"subject"), None)
        out: dict[str, Any] = {
            "id": self.id,
            "received_at": datetime.fromtimestamp(self.t).astimezone().isoformat(timespec="milliseconds"),
            "t": round(self.t, 6),
            "proto": self.proto,
            "api": self.api,
            "from": self.sender,
            "to": list(self.to),
            "correlation_id": self.cid,
            "message_id": self.mid,
            "subject": None if subject is None else subject.decode("utf-8", "replace"),
            "size": self.size,
            "sha256": self.sha,
            "esp_id": self.esp_id,
        }
        if headers:
            out["headers"] = [[k, v] for k, v in self.headers()]
        return out


@dataclass(frozen=True)
class Query:
    """The filters and page of one ``GET /messages`` (every filter given must hold)."""

    rcpt: str | None = None  # an envelope recipient, case-insensitive
    sender: str | None = None  # the envelope sender, case-insensitive
    cid: str | None = None  # the correlation id
    headers: tuple[tuple[str, str | None], ...] = ()  # ("Name", "value") equal, or ("Name", None) present
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # epoch seconds, exclusive
    offset: int = 0
    limit: int = LIMIT_DEFAULT

    def matches(self, r: Received) -> bool:
        if self.cid is not None and r.cid != self.cid:
            return False
        if self.since is not None and r.t < self.since:
            return False
        if self.until is not None and r.t >= self.until:
            return False
        if self.sender is not None and r.sender.lower() != self.sender:
            return False
        if self.rcpt is not None and self.rcpt not in (a.lower() for a in r.to):
            return False
        if self.headers:
            return self._headers_match(r)
        return True

    @cached_property
    def _header_bytes(self) -> list[tuple[bytes, bytes | None, bytes]]:
        """Per header filter: name, value (None: present) and the value's first word (a folded value
        keeps its words, not its spaces)."""
        out = []
        for name, value in self.headers:
            v = None if value is None else value.encode()
            out.append((name.encode(), v, (v.split() or [b""])[0] if v else b""))
        return out

    def _headers_match(self, r: Received) -> bool:
        low = r.head.lower()
        for name, value, word in self._header_bytes:
            if name not in low or word not in r.head:
                return False  # the cheap tests first: substring searches in C
            found = header_values(r.head, low, name)
            if (next(found, None) is None) if value is None else (value not in found):
                return False
        return True

    def as_dict(self) -> dict[str, Any]:
        """Picklable, for the pipe to a worker process."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**out, "headers": [list(h) for h in self.headers]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Query:
        return cls(**{**d, "headers": tuple((n, v) for n, v in d["headers"])})


def _when(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is neither epoch seconds nor an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ConfigError(f"{name}: {text!r} has no time zone (add Z or +00:00)")
    return when.timestamp()


def _count(name: str, text: str, low: int, high: int) -> int:
    try:
        n = int(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not a whole number") from None
    if not low <= n <= high:
        raise ConfigError(f"{name}: {n} is not between {low} and {high}")
    return n


def parse_query(params: Mapping[str, str], header_values: list[str]) -> Query:
    """The query string of ``GET /messages`` (``header`` may repeat: ``Name`` or ``Name: value``)."""
    headers = []
    for h in header_values:
        name, sep, value = h.partition(":")
        if not name.strip():
            raise ConfigError(f"header: {h!r} names no header (Name or Name: value)")
        headers.append((name.strip().lower(), value.strip() if sep else None))
    low = {k: (params[k].strip().lower() if params.get(k) else None) for k in ("rcpt", "sender")}
    return Query(
        rcpt=low["rcpt"],
        sender=low["sender"],
        cid=params.get("id") or None,
        headers=tuple(headers),
        since=_when("since", params["since"]) if params.get("since") else None,
        until=_when("until", params["until"]) if params.get("until") else None,
        offset=_count("offset", params["offset"], 0, 10**9) if params.get("offset") else 0,
        limit=_count("limit", params["limit"], 1, LIMIT_MAX) if params.get("limit") else LIMIT_DEFAULT,
    )


@dataclass
class Found:
    """One worker's (or, merged, the ESP's) answer: how many match, the newest ``offset + limit`` of them."""

    total: int
    messages: list[Received]
    kept: int
    received: int

    @staticmethod
    def merge(parts: list[Found], q: Query) -> Found:
        newest = sorted((m for p in parts for m in p.messages), key=lambda m: m.t, reverse=True)
        return Found(
            total=sum(p.total for p in parts),
            messages=newest[: q.offset + q.limit],
            kept=sum(p.kept for p in parts),
            received=sum(p.received for p in parts),
        )


class MessageStore:
    """One worker's latest messages. ``add`` is an accepted-message hook (SMTP and HTTP call it)."""

    def __init__(self, worker: int, keep: int = KEEP_DEFAULT) -> None:
        self.worker = worker
        self.keep = keep
        self._msgs: deque[Received] = deque(maxlen=keep)
        self._n = itertools.count(1)
        self.received = 0
        self._arrived: asyncio.Event | None = None  # made on the first long poll, in the running loop

    def add(self, kept: Mapping[str, Any]) -> None:
        self.received += 1
        if not self.keep:
            return
        content = kept.get("content") or b""
        end = content.find(b"\r\n\r\n")
        head = content[: min(end if end >= 0 else len(content), HEADER_BYTES)]
        self._msgs.append(
            Received(
                id=f"{self.worker}-{next(self._n)}",
                t=time.time(),
                proto=kept.get("proto") or ("http" if kept.get("api") else "smtp"),
                api=kept.get("api"),
                sender=kept.get("sender") or "",
                to=tuple(kept.get("to") or ()),
                cid=kept.get("id"),
                mid=kept.get("mid"),
                size=int(kept.get("size") or len(content)),
                sha=kept.get("sha") or "",
                esp_id=kept.get("esp_id"),
                head=bytes(head),
            )
        )
        if self._arrived is not None:
            self._arrived.set()

    def find(self, q: Query) -> Found:
        total = 0
        page: list[Received] = []
        want = q.offset + q.limit
        for m in reversed(self._msgs):  # newest first
            if q.matches(m):
                total += 1
                if len(page) < want:
                    page.append(m)
        return Found(total, page, len(self._msgs), self.received)

    def get(self, mid: str) -> Received | None:
        return next((m for m in reversed(self._msgs) if m.id == mid), None)

    async def arrival(self, timeout: float) -> None:
        """Return when a message arrives or after ``timeout`` s, whichever is first."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            pass
