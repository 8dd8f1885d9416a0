"""Writing and reading ledger files: the durability rule, the line format, torn and foreign lines.

Format. A run's ledger is a directory of JSON Lines files, one source per writing process
(``esp-smtp-0``, ``load-1``, ``sut``, ``timeline``...), written to its open segment ``<source>.jsonl``
and closed into numbered, zstd-compressed segments as it grows (``mailstorm.ledger.segments``: the
names, the order, the settings). A process that restarts appends to its own open segment again. A line
is ``{"k":...,"t":...,"src":...,<the record's fields>}``, the
fields being those ``mailstorm.ledger.records`` declares for the kind (readers do not depend on the order
of keys: lines written before the record classes have ``t`` first).

Durability. ``LedgerWriter.write`` hands the line to the OS with one ``os.write`` on an ``O_APPEND``
descriptor before it returns; callers write a record *before* sending the reply it describes, so a
SIGKILL of the writer loses no record of a reply already given (a machine crash may; ``fsync=True``
covers that at a cost). A torn last line (a kill during the write itself) is skipped by the readers and
counted (``LedgerReader.torn_lines``).

This module must stay free of gevent/locust imports: the fake ESP (asyncio), the Locust users (gevent)
and the reports (plain) all import it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Union

import msgspec
import orjson

from mailstorm.ledger.records import RECORDS, Kind, Record
from mailstorm.ledger.segments import (
    LEDGER_SUFFIX,
    Compressor,
    SegmentPolicy,
    closed_path,
    closed_seqs,
    open_segment,
    segments,
)

_encode = msgspec.json.Encoder().encode
# One decoder for every kind: msgspec picks the class by the "k" tag and ignores keys it does not declare.
_decode = msgspec.json.Decoder(Union[tuple(RECORDS.values())]).decode  # noqa: UP007 (a runtime tuple)
_stamp = msgspec.structs.replace

InvalidRecord = msgspec.DecodeError
"""What ``decode`` raises for a line that is not a record of a known kind with its declared fields."""


def encode_line(record: Record, *, t: int, src: str) -> bytes:
    """``record`` as one ledger line (with its newline), stamped with ``t`` and ``src``."""
    # One copy of a frozen record and one encode, both in C: measured cheaper than splicing the envelope
    # into the encoded fields in Python (bench/bench_ledger.py).
    return _encode(_stamp(record, t=t, src=src)) + b"\n"


def decode(line: bytes | str) -> Record:
    """The typed record on ``line``; ``InvalidRecord`` when it is torn, of an unknown kind, or lacks a
    declared field (keys it does not declare are ignored)."""
    return _decode(line)


class LedgerWriter:
    """Appends records to ``<directory>/<source>.jsonl``; one writer per process and source.

    Thread-safe (a lock around the single write), usable from asyncio (the write is a short
    non-blocking syscall on a local file) and from gevent (no cooperative yield inside). The open
    segment is closed by ``policy`` (``SegmentPolicy.from_env()`` unless given): a rename and an open
    under the same lock, after the write that filled it; the writer's ``Compressor`` (a child process)
    compresses it from there.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        source: str,
        *,
        fsync: bool = False,
        policy: SegmentPolicy | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.path = self.directory / f"{source}{LEDGER_SUFFIX}"
        self.policy = SegmentPolicy.from_env() if policy is None else policy
        self._fsync = fsync
        self._lock = threading.Lock()
        self.records_written = 0
        # Closed segments are compressed in a child process.
        self.compressor = Compressor(fsync=fsync, fast=self.policy.fast)
        seqs = closed_seqs(self.directory, source)
        self._seq = seqs[-1] if seqs else 0
        self._fd: int | None = None
        self._open()
        # A restart after a kill mid-write: end the torn line, or our first record would be glued to it
        # and skipped with it.
        if self._size > 0:
            with self.path.open("rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    os.write(self._fd, b"\n")  # type: ignore[arg-type]
                    self._size += 1
        if self.policy.compress:
            # Segments a killed predecessor closed and did not get to compress.
            for seq in seqs:
                plain = closed_path(self.directory, source, seq)
                if plain.exists():
                    self.compressor.submit(plain)

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        # What the write path compares, worked out once per segment (it runs once per record).
        self._rotate_at = self.policy.max_bytes or sys.maxsize
        age = self.policy.max_age_s
        self._rotate_by: float | None = None if age is None else time.monotonic() + age

    def _rotate(self) -> None:
        """Close the open segment (under the lock): rename it to the next number, open a fresh one."""
        self._seq += 1
        closed = closed_path(self.directory, self.source, self._seq)
        os.close(self._fd)  # type: ignore[arg-type]
        os.rename(self.path, closed)
        self._open()
        if self.policy.compress:
            self.compressor.submit(closed)

    def write(self, record: Record, /, *, t: int | None = None) -> int:
        """Write one record now and return its timestamp (ns): ``t`` when given (a record dated earlier
        than it is written), else the time of the call."""
        if t is None:
            t = time.time_ns()
        self.write_lines((encode_line(record, t=t, src=self.source),))
        return t

    def write_lines(self, lines: Iterable[bytes]) -> None:
        """Append whole ledger lines made elsewhere (``encode_line``, each keeping its own t and src) in
        one write: how the Locust master gathers the ledger a remote load worker shipped to it."""
        data = b"".join(lines)
        if not data:
            return
        with self._lock:
            if self._fd is None:
                raise ValueError(f"ledger {self.path} is closed")
            os.write(self._fd, data)
            if self._fsync:
                os.fsync(self._fd)
            self.records_written += data.count(b"\n")
            self._size += len(data)
            if self._size >= self._rotate_at or (
                self._rotate_by is not None and time.monotonic() >= self._rotate_by
            ):
                self._rotate()

    def close(self, *, wait_s: float = 60.0) -> None:
        """Close the open segment (it stays plain, the last of its source) and wait up to ``wait_s``
        for this writer's closed segments to be compressed (a segment left plain is still read)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self.compressor.wait(wait_s)

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LedgerReader:
    """Reads and merges every ledger file of one run directory (or one ledger directory).

    ``records`` yields each line as the dict on disk (every key, known or not: the form the pytest
    plugin's users and the tests read); ``typed`` yields the declared records. Torn lines are skipped
    and counted in ``torn_lines``; lines of unknown kinds (or lacking a declared field) are skipped by
    ``typed`` and counted in ``skipped``.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.torn_lines = 0
        self.skipped = 0

    def files(self) -> list[Path]:
        """Every segment, in reading order (``mailstorm.ledger.segments``)."""
        return segments(self.directory)

    def _lines(self, path: Path, kinds: Iterable[str] | None) -> Iterator[bytes]:
        # Cheap pre-filter: look for the kind's bytes before paying for a parse.
        needles = [f'"k":"{k}"'.encode() for k in kinds] if kinds is not None else None
        with open_segment(path) as fh:
            for raw in fh:
                if needles is None or any(n in raw for n in needles):
                    yield raw

    def iter_file(self, path: Path, kinds: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        wanted = {str(k) for k in kinds} if kinds is not None else None
        for raw in self._lines(path, wanted):
            try:
                rec = orjson.loads(raw)
            except orjson.JSONDecodeError:
                # Only a kill in the middle of a write makes this: the last line a writer process wrote.
                self.torn_lines += 1
                continue
            if wanted is None or rec.get("k") in wanted:
                yield rec

    def records(self, kinds: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every record (of the given kinds), segment by segment, each in write order."""
        kinds = list(kinds) if kinds is not None else None
        for path in self.files():
            yield from self.iter_file(path, kinds)

    def typed(self, *classes: type[Record]) -> Iterator[Record]:
        """Every record of the given classes (all when none is given) as its declared class, file by
        file, each file in write order."""
        kinds = {cls.kind for cls in classes} or None
        for path in self.files():
            for raw in self._lines(path, kinds):
                try:
                    rec = _decode(raw)
                except InvalidRecord:
                    try:
                        orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        self.torn_lines += 1
                        continue
                    self.skipped += 1
                    continue
                if kinds is None or rec.kind in kinds:
                    yield rec

    def merged(self, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every record (of the given kinds) from all files, ordered by timestamp."""
        return sorted(self.records(kinds), key=lambda r: r["t"])

    def count(self, kind: str | Kind) -> int:
        return sum(1 for _ in self.records([kind]))
