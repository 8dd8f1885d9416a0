"""The child process a ledger writer's ``Compressor`` starts: ``python -m mailstorm.ledger.compress
[--fsync] [PATH...]`` compresses the closed segments named (``mailstorm.ledger.segments.compress_segment``),
then each one whose path comes on stdin, one a line, until an empty line or the end of stdin; at a lower
priority than the writer. How is decided once, from the first segment (``compression_for``): the child
serves one writer, one source."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import zstandard

from mailstorm.ledger.segments import compress_segment, compression_for, read_sample


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
    with contextlib.suppress(OSError):
        os.nice(10)
    failed = 0
    names = [a for a in args if a != "--fsync"]
    params = None
    for name in names or _given():
        try:
            if params is None:
                params = compression_for(read_sample(Path(name)))
            compress_segment(Path(name), fsync=fsync, params=params)
        except (OSError, zstandard.ZstdError) as exc:
            failed += 1
            print(f"ledger segment {name} left plain: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
