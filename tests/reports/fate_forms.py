"""Both batch forms of the fate rules over one ledger directory: numpy (``fate.classify``) and SQL
(``fate.MESSAGES_SQL`` in DuckDB, as ``mailstorm.reports.engine`` runs it), each message's outcome by id."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from mailstorm.ledger import Kind, segments
from mailstorm.reports.engine import connect, load
from mailstorm.reports.fate import MESSAGES_SQL, OUTCOMES, classify
from mailstorm.reports.ingest import read_columns


def numpy_fates(ledger: Path) -> dict[str, str]:
    cols = read_columns(ledger)
    msgs = classify(cols)
    ids = cols.table(Kind.LOAD_SUBMIT)["id"]  # messages are numbered in the order their ids were interned
    return {cols.ids[i]: OUTCOMES[o] for i, o in zip(np.unique(ids[ids >= 0]), msgs.outcome, strict=True)}


def sql_fates(ledger: Path) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        con = connect(Path(tmp))
        try:
            load(con, segments(ledger))
            con.execute(MESSAGES_SQL)
            return {mid: OUTCOMES[o] for mid, o in con.execute("SELECT id, outcome FROM msg").fetchall()}
        finally:
            con.close()


def ledger_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` holding ledger files."""
    return sorted({p.parent for p in Path(root).rglob("*.jsonl")})
