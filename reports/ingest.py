"""A few kinds of records, read whole in Python: ``scan``, for a section that reads them one by one.

(Every other figure comes from the DuckDB store, mailstorm.reports.store.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mailstorm.ledger import InvalidRecord, Record, decode, open_segment, segments


def scan(ledger_dir: Path, wanted: tuple[bytes, ...]) -> Iterator[Record]:
    """Every record of a line holding one of ``wanted`` (``b'"k":"esp.webhook"'``...), file by file: what
    a section that needs a few kinds reads without decoding the rest; torn lines are skipped (the store
    counts those)."""
    for path in segments(ledger_dir):
        with open_segment(path) as fh:
            for line in fh:
                if any(w in line for w in wanted):
                    try:
                        yield decode(line)
                    except InvalidRecord:
                        continue
