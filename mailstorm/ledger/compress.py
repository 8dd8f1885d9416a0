"""The child process a ledger writer's ``Compressor`` starts: ``python -m mailstorm.ledger.compress
[--fsync] [--fast] [PATH...]`` compresses the closed segments named (``compress_segment``), then each
one whose path comes on stdin, one a line, until an empty line or the end of stdin, at a lower priority
than the writer: with zstd's optimal parser (``ZSTD_SMALL``), or at level 1 with ``--fast``
(``ZSTD_FAST``: the fake ESP's writers, ``SegmentPolicy.fast``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import zstandard

from mailstorm.ledger.segments import ZSTD_FAST, ZSTD_SMALL, compress_segment


def _given() -> Iterator[str]:
    for line in sys.stdin.buffer:
        name = os.fsdecode(line.rstrip(b"\n"))
        if not name:
            return
        yield name


def main(argv: list[str] | None = None) -> int:
    """Compress the closed segments named; one that fails stays plain, which every reader reads: said
    on stderr, not fatal."""
    args = sys.argv[1:] if argv is None else argv
    fsync = "--fsync" in args
    params = ZSTD_FAST if "--fast" in args else ZSTD_SMALL
    with contextlib.suppress(OSError):
        os.nice(10)
    failed = 0
    names = [a for a in args if a not in ("--fsync", "--fast")]
    for name in names or _given():
        try:
            compress_segment(Path(name), fsync=fsync, params=params)
        except (OSError, zstandard.ZstdError) as exc:
            failed += 1
            print(f"ledger segment {name} left plain: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
