"""The fate rules' batch form (``fate.MESSAGES_SQL`` in DuckDB, as ``mailstorm.reports.store`` runs it) and
the numpy oracle's (tests/reports/oracle.py) over one ledger directory, each message's outcome by id."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mailstorm.ledger import Kind
from mailstorm.reports.fate import OUTCOMES
from mailstorm.reports.store import open_run
from tests.reports.oracle import classify, read_columns


def numpy_fates(ledger: Path) -> dict[str, str]:
    cols = read_columns(ledger)
    msgs = classify(cols)
    ids = cols.table(Kind.LOAD_SUBMIT)["id"]  # messages are numbered in the order their ids were interned
    return {cols.ids[i]: OUTCOMES[o] for i, o in zip(np.unique(ids[ids >= 0]), msgs.outcome, strict=True)}


def sql_fates(ledger: Path) -> dict[str, str]:
    with open_run(ledger) as store:
        return {mid: OUTCOMES[o] for mid, o in store.rows("SELECT id, outcome FROM msg")}


def ledger_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` holding ledger files."""
    return sorted({p.parent for p in Path(root).rglob("*.jsonl")})


def sql_counts(ledger: Path) -> dict[str, int]:
    """The reports' outcome counts of a ledger directory (the batch form, in DuckDB)."""
    from mailstorm.reports.analysis import outcome_counts

    with open_run(ledger) as store:
        return outcome_counts(store)
