"""Ledger files -> columns: the one place that parses a run's JSON Lines into numpy arrays.

A million-message run has several million records, so this decodes each line once, straight into its
declared record class (``mailstorm.ledger.decode``: msgspec, in C, faster than a parse into a dict),
keeps only the fields the analysis uses, named through those classes (``_COLUMNS``), reducing them to
column lists every ``_FLUSH`` rows (which bounds memory), and interns correlation ids into dense integers
(``Columns.ids``) so every later step is vectorised numpy. The timeline's few records (run.*, chaos.*,
probe, action, and each load process's load.started and load.finished) are kept whole, as their record
classes.

Lines as today's and older ledgers hold them are all read: unknown kinds and keys are ignored (the ledger
contract allows them); a torn line (a writer killed mid-write) is skipped and counted, as
``mailstorm.ledger.LedgerReader`` does; a line of a known kind that does not fit its declaration (a
field missing or null, a damaged or hand-edited ledger) is read field by field from its JSON, missing
fields taking the defaults below, and a value of the wrong type is a one-line error naming the file.
Records that name the fault or toxic that acted on traffic (esp.fault, esp.replied, proxy.acted) are
also counted per name and second (``Columns.acts``), so a fault window can be told whether its fault
touched anything.

Several ESPs in one run write ledger files of their own (``esp-<name>-smtp-N``; the only ESP of a run
writes ``esp-smtp-N``): each ``esp.accepted`` row carries the ESP it came from as an index into
``Columns.esps`` (column ``esp``, from its file's name), so the reports can tell which ESP took a message.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mailstorm.errors import UserError
from mailstorm.ledger import (
    Action,
    AlertFiring,
    AlertResolved,
    ChaosBegin,
    ChaosEnd,
    EspAccepted,
    EspDelivered,
    EspFault,
    EspReplied,
    InvalidRecord,
    Kind,
    LoadDropped,
    LoadFinished,
    LoadStarted,
    LoadSubmit,
    Probe,
    ProxyActed,
    ProxyUpstreamFailed,
    Record,
    RunAborted,
    RunEnded,
    RunPhase,
    RunStarted,
    SutAccepted,
    SutBounced,
    SutDeferred,
    SutHeld,
    SutListed,
    SutQueue,
    SutRelayed,
    decode,
    field_types,
    key,
    open_segment,
    segments,
    source_of,
)

_FLUSH = 100_000  # rows held per kind before they are reduced to columns (bounds memory)
_TIMELINE: tuple[type[Record], ...] = (
    RunStarted, RunPhase, RunEnded, RunAborted, ChaosBegin, ChaosEnd, Probe, Action,
    LoadStarted, LoadFinished, AlertFiring, AlertResolved,
)  # fmt: skip
# The fields kept per kind, in column order; "id" becomes an interned integer.
_COLUMNS: dict[type[Record], tuple[str, ...]] = {
    cls: tuple(map(key, (Record.t, *fields)))
    for cls, fields in (
        (LoadSubmit, (LoadSubmit.id, LoadSubmit.intended, LoadSubmit.start, LoadSubmit.end, LoadSubmit.ok,
                      LoadSubmit.code, LoadSubmit.phase)),
        (LoadDropped, (LoadDropped.intended, LoadDropped.count, LoadDropped.loop_lag_ms)),
        (EspAccepted, (EspAccepted.id, EspAccepted.acked, EspAccepted.held)),
        (EspDelivered, (EspDelivered.id,)),
        (EspReplied, (EspReplied.id, EspReplied.code)),
        (SutAccepted, (SutAccepted.id,)),
        (SutDeferred, (SutDeferred.id,)),
        (SutBounced, (SutBounced.id,)),
        (SutRelayed, (SutRelayed.id, SutRelayed.code)),
        (SutHeld, (SutHeld.id,)),
        (SutListed, (SutListed.complete,)),
        (SutQueue, (SutQueue.depth,)),
        (ProxyUpstreamFailed, ()),
    )
}  # fmt: skip
_ID = key(LoadSubmit.id)  # every kind's correlation id is "id"
_CODE = key(EspReplied.code)  # a reply code: null (a cut connection, a timeout) becomes _NO_CODE
_STOPPED = key(LoadSubmit.phase)  # kept as one bool: the generator was stopped mid-submission
_STOP = "stop"
_ACKED = key(EspAccepted.acked)  # a line without it was acked: only a cut-off client makes it false
_NO_CODE = -1
_BOOLS = {name for cls, names in _COLUMNS.items() for name in names if field_types(cls)[name] is bool}
_BOOLS.add(_STOPPED)
_TIMELINE_KINDS = {cls.kind for cls in _TIMELINE}
_FLOATS = {key(LoadDropped.loop_lag_ms)}  # float64, NaN where a record lacks it
# Records naming the fault (or chaos-proxy toxic) that acted: class -> the field that names it. A
# listener's outage begin/end (an esp.fault with ``state``) is a change of state, not an action.
_ACTORS: dict[type[Record], str] = {EspFault: "fault", EspReplied: "fault", ProxyActed: "toxic"}
_ACTOR_KINDS = {str(cls.kind): name for cls, name in _ACTORS.items()}
_NS = 1_000_000_000
# Rows of these kinds also get the ESP whose ledger file they come from (column "esp").
_PER_ESP: frozenset[type[Record]] = frozenset({EspAccepted})
_ESP_COLUMN = "esp"
_ESP_FILE = re.compile(r"^esp-(?:([a-z][a-z0-9_]*)-)?smtp-\d+$")  # mailstorm.fake_esp.spec.ledger_source
UNNAMED_ESP = "esp"  # the name of the ESP of a run with one (its files carry none)


def esp_of_file(stem: str) -> str | None:
    """The ESP a ledger file (by its stem) belongs to; None for a file no ESP wrote."""
    m = _ESP_FILE.match(stem)
    return None if m is None else (m.group(1) or UNNAMED_ESP)


def scan(ledger_dir: Path, wanted: tuple[bytes, ...]) -> Iterator[Record]:
    """Every record of a line holding one of ``wanted`` (``b'"k":"esp.webhook"'``...), file by file: what
    a section that needs a few kinds reads without decoding the rest; torn lines are skipped (the main
    ingest counts those)."""
    for path in segments(ledger_dir):
        with open_segment(path) as fh:
            for line in fh:
                if any(w in line for w in wanted):
                    try:
                        yield decode(line)
                    except InvalidRecord:
                        continue


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
    timeline: list[Record] = field(default_factory=list)
    torn_lines: int = 0
    files: int = 0
    skipped: int = 0  # timeline lines that do not fit their declaration (a damaged or foreign ledger)
    acts: dict[str, Counter[int]] = field(default_factory=dict)  # fault/toxic name -> {epoch s: records}
    esps: list[str] = field(default_factory=list)  # ESP names, in file order: the "esp" column indexes it

    def table(self, kind: str) -> Table:
        return self.tables[str(kind)]


class _Acc:
    """Reduces one kind's rows (tuples of its column values) to numpy column chunks as they come."""

    def __init__(self, names: tuple[str, ...], interner: dict[str, int]) -> None:
        self.names = names
        self.interner = interner
        self.chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        for name, values in zip(self.names, zip(*rows, strict=True), strict=True):
            self.chunks[name].append(_column(name, list(values), self.interner))

    def table(self) -> Table:
        return Table(
            {n: np.concatenate(c) if c else np.zeros(0, dtype=_dtype(n)) for n, c in self.chunks.items()}
        )


def read_columns(ledger_dir: Path) -> Columns:
    """Parse every ledger segment under ``ledger_dir`` (plain or compressed) into ``Columns``."""
    interner: dict[str, int] = {}
    accs = {
        cls: _Acc(names + ((_ESP_COLUMN,) if cls in _PER_ESP else ()), interner)
        for cls, names in _COLUMNS.items()
    }
    getters = {cls: _row_getter(names) for cls, names in _COLUMNS.items()}
    by_kind = {cls.kind: cls for cls in _COLUMNS}
    timeline: list[Record] = []
    torn = skipped = 0
    acts: dict[str, Counter[int]] = {}
    esps: list[str] = []
    files = segments(ledger_dir)
    for path in files:
        esp = esp_of_file(source_of(path))
        if esp is not None and esp not in esps:
            esps.append(esp)
        tag = (-1 if esp is None else esps.index(esp),)
        pending: dict[type[Record], list[tuple[Any, ...]]] = {cls: [] for cls in accs}
        with open_segment(path) as fh:
            for raw in fh:
                try:
                    rec = decode(raw)
                except InvalidRecord:
                    # Not a declared record: torn, foreign, or a known kind that lacks a field.
                    loose = _loose(raw)
                    if loose is None:
                        torn += bool(raw.strip())
                        continue
                    kind = loose["k"]
                    if not isinstance(kind, str):
                        continue
                    actor = _ACTOR_KINDS.get(kind)
                    t = loose.get("t")
                    # (a damaged time is the tables' to report, not this count's)
                    if actor and (name := loose.get(actor)) and "state" not in loose and isinstance(t, int):
                        acts.setdefault(str(name), Counter())[t // _NS] += 1
                    cls = by_kind.get(kind)
                    if cls is not None:
                        row = tuple(loose.get(n) for n in _COLUMNS[cls])
                        pending[cls].append(row + tag if cls in _PER_ESP else row)
                    elif kind in _TIMELINE_KINDS:
                        skipped += 1
                    continue
                cls = type(rec)
                actor = _ACTORS.get(cls)
                if actor and (name := getattr(rec, actor)) and getattr(rec, "state", None) is None:
                    acts.setdefault(str(name), Counter())[rec.t // _NS] += 1
                rows = pending.get(cls)
                if cls is EspAccepted and rec.campaign is not None:
                    continue  # a campaign's message, not the load's (as fate.record_facts has it)
                if rows is not None:
                    rows.append(getters[cls](rec) + tag if cls in _PER_ESP else getters[cls](rec))
                    if len(rows) >= _FLUSH:
                        _add(accs[cls], rows, path, cls.kind)
                        rows.clear()
                elif cls in _TIMELINE:
                    timeline.append(rec)
        for cls, rows in pending.items():
            _add(accs[cls], rows, path, cls.kind)
    tables = {str(cls.kind): acc.table() for cls, acc in accs.items()}
    timeline.sort(key=lambda r: r.t)
    return Columns(
        tables=tables,
        ids=list(interner),
        timeline=timeline,
        torn_lines=torn,
        files=len(files),
        skipped=skipped,
        acts=acts,
        esps=esps,
    )


def _loose(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on a line that is not a declared record; None for a torn or non-object line."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Only a kill in the middle of a write produces this (or a blank line).
        return None
    return rec if isinstance(rec, dict) and "k" in rec else None


def _row_getter(names: tuple[str, ...]) -> Callable[[Record], tuple[Any, ...]]:
    """The fields ``names`` of a record as a tuple (attrgetter of one name gives the bare value)."""
    if len(names) > 1:
        return attrgetter(*names)
    (name,) = names
    return lambda rec: (getattr(rec, name),)


def _add(acc: _Acc, rows: list[tuple[Any, ...]], path: Path, kind: Kind) -> None:
    """``acc.add(rows)``; a value of the wrong type (a damaged or hand-edited ledger) is the user's to
    see as one line naming the file, not an internal error."""
    try:
        acc.add(rows)
    except (ValueError, TypeError, OverflowError) as exc:
        raise UserError(f"{path}: {kind} records: a value of the wrong type ({exc})") from None


def _dtype(name: str) -> type:
    return bool if name in _BOOLS else np.float64 if name in _FLOATS else np.int64


def _column(name: str, values: list[Any], interner: dict[str, int]) -> np.ndarray:
    if name in _FLOATS:
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    if name == _ID:
        setdefault = interner.setdefault
        return np.array([-1 if v is None else setdefault(v, len(interner)) for v in values], dtype=np.int64)
    if name == _STOPPED:
        return np.array([v == _STOP for v in values], dtype=bool)
    if name in _BOOLS:
        if None in values:
            default = name == _ACKED
            values = [default if v is None else v for v in values]
        return np.array(values, dtype=bool)
    if None in values:
        fill = _NO_CODE if name == _CODE else 0
        values = [fill if v is None else v for v in values]
    return np.array(values, dtype=np.int64)
