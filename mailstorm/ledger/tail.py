"""Following a ledger directory while its writers write: the lines appended since the last look.

``LineTail.poll`` yields every whole line added to every source since the previous poll, across the
source's segments: a segment closed (renamed, then compressed) since the last poll is read on from where
the open segment was left, and the segments closed after it whole. A cursor per source holds how many
closed segments are read and how far into the next one; the open segment is read only when two
listings of the closed segments around its opening agree (no rotation in between), so that what was
read from it is known to belong to the segment after the last closed one. A line without its newline
waits for its end (the writer is mid-line); at the end of a closed segment it is a torn line, dropped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailstorm.ledger.segments import open_segment, parse_name, segments

_BLOCK = 4 << 20


@dataclass
class _Cursor:
    closed: int = 0  # closed segments up to this number are read
    offset: int = 0  # bytes read of the segment after them (open, or closed since)
    partial: bytes = b""  # a line of that segment without its newline yet


def _closed_by_source(directory: Path) -> tuple[dict[str, list[tuple[int, Path]]], dict[str, Path]]:
    closed: dict[str, list[tuple[int, Path]]] = {}
    open_: dict[str, Path] = {}
    for path in segments(directory):
        parsed = parse_name(path.name)
        if parsed is None:
            continue
        source, seq, _ = parsed
        if seq is None:
            open_[source] = path
        else:
            closed.setdefault(source, []).append((seq, path))
    return closed, open_


class LineTail:
    """Yields the whole lines appended to a ledger directory's sources since the previous ``poll``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._cursors: dict[str, _Cursor] = {}

    def poll(self, *, final: bool = False) -> Iterator[bytes]:
        """The lines appended since the last poll. ``final`` (every writer has stopped): also a last
        line left without its newline."""
        before, opens = _closed_by_source(self.directory)
        opened: dict[str, int] = {}
        try:
            for source, path in opens.items():
                try:
                    opened[source] = os.open(path, os.O_RDONLY)
                except FileNotFoundError:
                    continue  # renamed away this instant: read as closed next time
            after, _ = _closed_by_source(self.directory)
            for source in sorted(set(after) | set(opened)):
                cur = self._cursors.setdefault(source, _Cursor())
                for seq, path in after.get(source, ()):
                    if seq > cur.closed:
                        yield from self._closed(cur, seq, path)
                fd = opened.get(source)
                stable = [s for s, _ in before.get(source, ())] == [s for s, _ in after.get(source, ())]
                if fd is not None and stable:
                    yield from self._open(cur, fd)
            if final:
                for cur in self._cursors.values():
                    if cur.partial:
                        yield cur.partial
                        cur.partial = b""
        finally:
            for fd in opened.values():
                os.close(fd)

    def _closed(self, cur: _Cursor, seq: int, path: Path) -> Iterator[bytes]:
        skip = cur.offset if seq == cur.closed + 1 else 0
        partial = cur.partial if skip else b""
        with open_segment(path) as fh:
            while skip > 0:
                skip -= len(fh.read(min(skip, _BLOCK)))
            while chunk := fh.read(_BLOCK):
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                yield from lines
        # A line without its newline at the end of a closed segment was torn by a kill: dropped, as the
        # reports' reader drops it.
        cur.closed, cur.offset, cur.partial = seq, 0, b""

    def _open(self, cur: _Cursor, fd: int) -> Iterator[bytes]:
        while chunk := os.pread(fd, _BLOCK, cur.offset):
            cur.offset += len(chunk)
            lines = (cur.partial + chunk).split(b"\n")
            cur.partial = lines.pop()
            yield from lines
