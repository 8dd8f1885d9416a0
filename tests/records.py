"""Ledger records for tests: the declared classes with plausible values for the fields a test does not
care about, and ``loose`` for a line that does not follow the declarations (an older or foreign writer)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from mailstorm.ledger import (
    EspAccepted,
    EspReplied,
    LedgerWriter,
    LoadSubmit,
    SutAccepted,
    SutBounced,
    SutDeferred,
    SutRelayed,
)


def submit(
    mid: str,
    *,
    intended: int,
    start: int | None = None,
    end: int | None = None,
    ok: bool = True,
    code: int | None = 250,
    phase: str | None = None,
) -> LoadSubmit:
    start = intended if start is None else start
    return LoadSubmit(
        id=mid,
        intended=intended,
        start=start,
        end=start + 5_000_000 if end is None else end,
        ok=ok,
        code=code,
        text="2.0.0 Ok" if ok else "refused",
        phase=phase or ("done" if ok else "data"),
        target="127.0.0.1:1",
        worker=0,
        cls="default",
        size=1000,
        rcpts=1,
    )


def accepted(mid: str | None, *, acked: bool = True) -> EspAccepted:
    return EspAccepted(
        id=mid, mid=mid, size=1000, rcpts=1, sha="0" * 32, proto="smtp", api=None, peer="127.0.0.1",
        session="s", key=None, acked=acked,
    )  # fmt: skip


def replied(mid: str | None, code: int | None, *, phase: str = "eod") -> EspReplied:
    return EspReplied(
        proto="smtp", phase=phase, code=code, text=f"{code} test", fault=None, session="s", id=mid,
        peer="127.0.0.1",
    )  # fmt: skip


def sut_accepted(mid: str, queue_id: int | str = 1) -> SutAccepted:
    return SutAccepted(id=mid, queue_id=queue_id)


def relayed(mid: str, *, attempt: int = 1, code: int | None = 250) -> SutRelayed:
    return SutRelayed(id=mid, attempt=attempt, code=code)


def deferred(mid: str, *, attempt: int = 1, code: int | None = 451, retry_in_s: float = 60) -> SutDeferred:
    return SutDeferred(id=mid, attempt=attempt, code=code, text="later", retry_in_s=retry_in_s)


def bounced(mid: str, *, code: int | None = 550) -> SutBounced:
    return SutBounced(id=mid, code=code, text="no")


def loose(writer: LedgerWriter, kind: str, *, t: int | None = None, **fields: Any) -> None:
    """A line of ``kind`` with only ``fields``: not a declared record (an older or a foreign writer's)."""
    line = {"t": time.time_ns() if t is None else t, "k": kind, "src": writer.source, **fields}
    writer.write_lines([orjson.dumps(line) + b"\n"])
