"""Ledger files -> columns: the one place that parses a run's JSON Lines into numpy arrays.

A million-message run has several million records, so this parses each line once with orjson, keeps
only the fields the analysis uses (reducing parsed records to column lists every ``_FLUSH`` rows, which
bounds memory), and interns correlation ids into dense integers (``Columns.ids``) so every
later step is vectorised numpy. Unknown kinds and fields are ignored (the ledger contract allows them);
a torn line (a writer killed mid-write) is skipped and counted, as ``mailstorm.ledger.LedgerReader`` does.
The timeline's few records (run.*, chaos.*, probe, action) are kept whole, as dicts. Records that name
the fault or toxic that acted on traffic (esp.fault, esp.replied, proxy.acted) are also counted per
name and second (``Columns.acts``), so a fault window can be told whether its fault touched anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mailstorm.errors import UserError
from mailstorm.ledger import LEDGER_SUFFIX, Kind

_BLOCK = 4 << 20  # read buffer
_FLUSH = 100_000  # parsed records held per kind before they are reduced to columns (bounds memory)
_TIMELINE_KINDS = {
    Kind.RUN_STARTED,
    Kind.RUN_PHASE,
    Kind.RUN_ENDED,
    Kind.CHAOS_BEGIN,
    Kind.CHAOS_END,
    Kind.PROBE,
    Kind.ACTION,
}
# kind -> the fields kept, in column order; "id" becomes an interned integer.
_FIELDS: dict[str, tuple[str, ...]] = {
    Kind.LOAD_SUBMIT: ("t", "id", "intended", "start", "end", "ok", "code", "phase"),
    Kind.LOAD_DROPPED: ("t", "intended", "count"),
    Kind.ESP_ACCEPTED: ("t", "id", "acked"),
    Kind.ESP_REPLIED: ("t", "id", "code"),
    Kind.SUT_ACCEPTED: ("t", "id"),
    Kind.SUT_DEFERRED: ("t", "id"),
    Kind.SUT_BOUNCED: ("t", "id"),
    Kind.SUT_RELAYED: ("t", "id", "code"),
    Kind.SUT_QUEUE: ("t", "depth"),
    Kind.PROXY_UPSTREAM_FAILED: ("t",),
}
# Records naming the fault (or chaos-proxy toxic) that acted: kind -> the field that names it. A
# listener's outage begin/end (an esp.fault with ``state``) is a change of state, not an action.
_ACTOR_FIELDS: dict[str, str] = {
    Kind.ESP_FAULT: "fault",
    Kind.ESP_REPLIED: "fault",
    Kind.PROXY_ACTED: "toxic",
}
_NS = 1_000_000_000
_NO_CODE = -1  # a cut connection / timeout: code null in the ledger
_BOOLS = ("ok", "acked", "phase")  # phase is kept as one bool: "stop" (the generator was stopped)


@dataclass
class Table:
    """The rows of one kind, as numpy columns (int64 unless said otherwise)."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]


@dataclass
class Columns:
    """Everything the analysis reads from one run's ledgers."""

    tables: dict[str, Table]
    ids: list[str]  # interned correlation ids: tables' "id" columns index into this (-1: no id)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: int = 0
    files: int = 0
    acts: dict[str, Counter[int]] = field(default_factory=dict)  # fault/toxic name -> {epoch s: records}

    def table(self, kind: str) -> Table:
        return self.tables[str(kind)]


class _Acc:
    """Reduces one kind's parsed records to numpy column chunks as they come (bounded memory)."""

    def __init__(self, names: tuple[str, ...], interner: dict[str, int]) -> None:
        self.names = names
        self.interner = interner
        self.chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def add(self, recs: list[dict[str, Any]]) -> None:
        for name in self.names:
            try:
                values = [r[name] for r in recs]  # the common case: every record has the field
            except KeyError:
                values = [r.get(name) for r in recs]
            self.chunks[name].append(_column(name, values, self.interner))

    def table(self) -> Table:
        return Table(
            {
                n: np.concatenate(c) if c else np.zeros(0, dtype=bool if n in _BOOLS else np.int64)
                for n, c in self.chunks.items()
            }
        )


def read_columns(ledger_dir: Path) -> Columns:
    """Parse every ``*.jsonl`` under ``ledger_dir`` into ``Columns``."""
    interner: dict[str, int] = {}
    accs = {k: _Acc(f, interner) for k, f in _FIELDS.items()}
    timeline: list[dict[str, Any]] = []
    acts: dict[str, Counter[int]] = {}
    torn = 0
    files = sorted(Path(ledger_dir).glob(f"*{LEDGER_SUFFIX}"))
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for path in files:
        pending: dict[str, list[dict[str, Any]]] = {k: [] for k in accs}
        with path.open("rb", buffering=_BLOCK) as fh:
            for raw in fh:
                # Every line is parsed: orjson reads a short record faster than Python can find its
                # kind in the bytes to skip it (measured: 0.35 us vs 0.5 us a line).
                try:
                    rec = loads(raw)
                    kind = rec["k"]
                except (decode_error, TypeError, KeyError):
                    # Only a kill in the middle of a write produces this (or a blank line).
                    torn += bool(raw.strip())
                    continue
                actor = _ACTOR_FIELDS.get(kind)
                if actor is not None and (name := rec.get(actor)) and "state" not in rec:
                    t = rec.get("t")
                    if isinstance(t, int):  # a damaged record is the tables' to report, not this count's
                        acts.setdefault(str(name), Counter())[t // _NS] += 1
                rows = pending.get(kind)
                if rows is not None:
                    rows.append(rec)
                    if len(rows) >= _FLUSH:
                        _add(accs[kind], rows, path)
                        rows.clear()
                elif kind in _TIMELINE_KINDS:
                    timeline.append(rec)
        for kind, rows in pending.items():
            _add(accs[kind], rows, path)
    tables = {kind: acc.table() for kind, acc in accs.items()}
    timeline.sort(key=lambda r: r.get("t", 0))
    return Columns(
        tables=tables, ids=list(interner), timeline=timeline, torn_lines=torn, files=len(files), acts=acts
    )


def _add(acc: _Acc, rows: list[dict[str, Any]], path: Path) -> None:
    """``acc.add(rows)``; a value of the wrong type (a damaged or hand-edited ledger) is the user's to
    see as one line naming the file, not an internal error."""
    try:
        acc.add(rows)
    except (ValueError, TypeError, OverflowError) as exc:
        kind = rows[0].get("k") if rows else "?"
        raise UserError(f"{path}: {kind} records: a value of the wrong type ({exc})") from None


def _column(name: str, values: list[Any], interner: dict[str, int]) -> np.ndarray:
    if name == "id":
        setdefault = interner.setdefault
        return np.array([-1 if v is None else setdefault(v, len(interner)) for v in values], dtype=np.int64)
    if name == "phase":
        return np.array([v == "stop" for v in values], dtype=bool)
    if name in _BOOLS:
        if None in values:  # acked defaults to true: only a cut-off client makes it false
            default = name == "acked"
            values = [default if v is None else v for v in values]
        return np.array(values, dtype=bool)
    if None in values:
        fill = _NO_CODE if name == "code" else 0
        values = [fill if v is None else v for v in values]
    return np.array(values, dtype=np.int64)
