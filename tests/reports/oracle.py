"""The test oracle: today's reports' former numpy path, kept in the tests to check the SQL path against.

The reports read a run through DuckDB (mailstorm.reports.store, fate.MESSAGES_SQL, the sections' SQL).
This is the path they took before, written independently in numpy over every record held in memory:
the ledger lines decoded into columns (``read_columns``), the fate rules' batch form over them
(``classify``), the per-second series (``build_series``) and nearest-rank percentiles
(``percentiles``). tests/reports/test_store.py holds the two paths equal on every known-answer run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
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
from mailstorm.reports.fate import (
    BOUNCED,
    DEFERRED,
    ESP_AGAIN,
    ESP_HELD,
    ESP_ONCE,
    ESP_OUT,
    HELD,
    LISTED,
    LOST,
    NEVER,
    OUTCOME_OF,
    OUTCOMES,
    REFUSED,
    REJECTED,
    RELAYED,
    STOPPED,
    SUBMITTED,
    TOOK,
    UNCORRELATED,
)  # fmt: skip
from mailstorm.reports.series import MAX_SECONDS, Series
from mailstorm.reports.store import esp_of_file

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99_9": 99.9}
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


@dataclass
class Messages:
    """The batch form's result: columns indexed by message (0..submitted-1), and the counts from them."""

    outcome: np.ndarray  # int8, one of the outcome constants above
    intended: np.ndarray  # ns
    sut_in: np.ndarray  # ns when the SUT took it (NEVER if it never did)
    first_esp: np.ndarray  # ns of the first ESP acceptance (NEVER if none)
    # ns the ESP delivered it: its first esp.delivered (a message it held in its backlog), else its
    # first acceptance (an ESP that holds nothing delivers what it accepts); NEVER if none, or if it is
    # still in the ESP's backlog
    esp_delivered: np.ndarray
    left_at: np.ndarray  # ns when it left the SUT for good: first acceptance or bounce (NEVER if not)
    submit_ok_end: np.ndarray  # ns of the first successful submission's end (NEVER if none)
    first_start: np.ndarray  # ns when the generator actually began the first attempt
    submit_attempts: np.ndarray  # load.submit records per message
    esp_attempts: np.ndarray  # ESP records carrying its id (acceptances + replies): retry amplification
    unacked: int  # esp.accepted records with acked=false
    rejected_at_stop: int  # rejected messages with an attempt the generator abandoned when it stopped
    esp_unmatched: int  # ESP acceptances of ids never submitted

    def counts(self) -> dict[str, int]:
        import numpy as np

        per = np.bincount(self.outcome, minlength=len(OUTCOMES))
        out = {"submitted": len(self.outcome)}
        out.update({name: int(per[i]) for i, name in enumerate(OUTCOMES)})
        return out

    def e2e_ms(self) -> np.ndarray:
        """End-to-end latency of every message that reached the ESP: the ESP's delivery (its first
        acceptance, or its esp.delivered when the ESP held it) - intended send time (from the intended
        time: a busy generator's lateness counts against the pipeline)."""
        got = self.esp_delivered != NEVER
        return (self.esp_delivered[got] - self.intended[got]) / 1e6

    def submit_ms(self) -> np.ndarray:
        """Submission latency: end of the first successful attempt - intended send time."""
        got = self.submit_ok_end != NEVER
        return (self.submit_ok_end[got] - self.intended[got]) / 1e6


def classify(cols: Columns) -> Messages:
    """The batch form: every submitted message's facts, outcome and times, vectorised over the columns."""
    import numpy as np

    sub = cols.table(Kind.LOAD_SUBMIT)
    # Dense message index for every interned id that was submitted.
    msg_of = np.full(len(cols.ids) + 1, -1, dtype=np.int64)  # +1: index -1 (no id) maps to -1
    seen = np.zeros(len(cols.ids), dtype=bool)  # ids are dense integers: a mask beats a sort
    seen[sub["id"][sub["id"] >= 0]] = True
    uniq = np.flatnonzero(seen)
    n = len(uniq)
    msg_of[uniq] = np.arange(n)

    def per_message(table_kind: str) -> tuple[np.ndarray, np.ndarray]:
        table = cols.table(table_kind)
        m = msg_of[table["id"]] if len(table) else np.zeros(0, dtype=np.int64)
        return m, m >= 0

    def flag(table_kind: str, where: np.ndarray | None = None) -> np.ndarray:
        m, k = per_message(table_kind)
        out = np.zeros(n, dtype=bool)
        out[m[k if where is None else k & where]] = True
        return out

    def code_in(table_kind: str, low: int) -> np.ndarray:
        code = cols.table(table_kind)["code"]
        return (code >= low) & (code < low + 100)

    sm, sk = per_message(Kind.LOAD_SUBMIT)
    intended = np.full(n, NEVER, dtype=np.int64)
    # A writer that leaves out intended/start/end (0 once ingested) falls back on what it did record.
    end_t = np.where(sub["end"] > 0, sub["end"], sub["t"])
    start_t = np.where(sub["start"] > 0, sub["start"], end_t)
    intended_t = np.where(sub["intended"] > 0, sub["intended"], start_t)
    np.minimum.at(intended, sm[sk], intended_t[sk])
    submit_attempts = np.bincount(sm[sk], minlength=n)
    first_start = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first_start, sm[sk], start_t[sk])
    ok = sk & sub["ok"]
    submit_ok_end = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(submit_ok_end, sm[ok], end_t[ok])

    sut_in = submit_ok_end.copy()
    am, ak = per_message(Kind.SUT_ACCEPTED)
    np.minimum.at(sut_in, am[ak], cols.table(Kind.SUT_ACCEPTED)["t"][ak])

    esp = cols.table(Kind.ESP_ACCEPTED)
    em, ek = per_message(Kind.ESP_ACCEPTED)
    esp_count = np.bincount(em[ek], minlength=n)
    first_esp = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first_esp, em[ek], esp["t"][ek])
    held_until = np.full(n, NEVER, dtype=np.int64)
    dm, dk = per_message(Kind.ESP_DELIVERED)
    np.minimum.at(held_until, dm[dk], cols.table(Kind.ESP_DELIVERED)["t"][dk])
    held_at_esp = flag(Kind.ESP_ACCEPTED, esp["held"])
    # Delivered when it left the ESP's backlog; one still in it is not delivered (yet).
    esp_delivered = np.where(held_until != NEVER, held_until, np.where(held_at_esp, NEVER, first_esp))

    rep = cols.table(Kind.ESP_REPLIED)
    rm, rk = per_message(Kind.ESP_REPLIED)
    esp_attempts = esp_count + np.bincount(rm[rk], minlength=n)
    hard = rk & code_in(Kind.ESP_REPLIED, 500)
    bounce_at = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(bounce_at, rm[hard], rep["t"][hard])
    bm, bk = per_message(Kind.SUT_BOUNCED)
    np.minimum.at(bounce_at, bm[bk], cols.table(Kind.SUT_BOUNCED)["t"][bk])

    # The facts, as the incremental form's record_facts sets them, then the same table. (int16 and masks:
    # at a million messages every int64 temporary is 8 MB more at the reports' peak.)
    state = np.full(n, SUBMITTED, dtype=np.int16)
    state[sut_in != NEVER] |= TOOK
    state[esp_count >= 1] |= ESP_ONCE
    state[esp_count >= 2] |= ESP_AGAIN
    state[held_at_esp] |= ESP_HELD
    state[held_until != NEVER] |= ESP_OUT
    state[bounce_at != NEVER] |= REFUSED
    state[flag(Kind.SUT_DEFERRED)] |= DEFERRED
    state[flag(Kind.SUT_RELAYED, code_in(Kind.SUT_RELAYED, 200))] |= RELAYED
    state[flag(Kind.SUT_HELD)] |= HELD
    listed = cols.table(Kind.SUT_LISTED)
    if len(listed) and listed["complete"].any():
        state |= LISTED
    stopped = flag(Kind.LOAD_SUBMIT, sub["phase"])
    state[stopped] |= STOPPED
    outcome = np.asarray(OUTCOME_OF, dtype=np.int8)[state]
    esp_unmatched = int((~ek).sum())
    mark_uncorrelated(outcome, sut_in, esp_unmatched)

    left_at = np.where(first_esp != NEVER, first_esp, np.where(outcome == BOUNCED, bounce_at, NEVER))
    # A message the ESP saw before the sender heard back (timeout after DATA) was in the SUT no later.
    sut_in = np.minimum(sut_in, left_at)
    return Messages(
        outcome=outcome,
        intended=intended,
        sut_in=sut_in,
        first_esp=first_esp,
        esp_delivered=esp_delivered,
        left_at=left_at,
        submit_ok_end=submit_ok_end,
        first_start=first_start,
        submit_attempts=submit_attempts,
        esp_attempts=esp_attempts,
        unacked=int((~esp["acked"]).sum()),
        rejected_at_stop=int(((outcome == REJECTED) & stopped).sum()),
        esp_unmatched=esp_unmatched,
    )


def mark_uncorrelated(outcome: np.ndarray, sut_in: np.ndarray, esp_unmatched: int) -> None:
    """Of the messages that would be ``lost``, as many as the ESP accepted mail with ids never submitted
    become ``uncorrelated`` (in place): the earliest the SUT took, as a FIFO pipeline sends them."""
    import numpy as np

    if esp_unmatched <= 0:
        return
    lost = np.flatnonzero(outcome == LOST)
    if len(lost) > esp_unmatched:
        lost = lost[np.argsort(sut_in[lost], kind="stable")[:esp_unmatched]]
    outcome[lost] = UNCORRELATED


def start_ns(cols: Columns, msgs: Messages) -> int:
    for rec in cols.timeline:
        if isinstance(rec, RunStarted):
            return rec.t
    return int(msgs.intended.min()) if len(msgs.intended) else 0


def build_series(cols: Columns, msgs: Messages, t0_ns: int) -> Series:
    """Bin every event of the run into seconds from ``t0_ns``."""
    ends = [msgs.intended, msgs.sut_in, msgs.left_at]
    esp_t = cols.table(Kind.ESP_ACCEPTED)["t"]
    rep = cols.table(Kind.ESP_REPLIED)
    arrays = [*ends, esp_t, rep["t"]]
    last = max((int(a[a != NEVER].max()) for a in arrays if (a != NEVER).any()), default=t0_ns)
    length = int(min((last - t0_ns) // _NS + 1, MAX_SECONDS))
    length = max(length, 1)

    def sec(t: np.ndarray) -> np.ndarray:
        s = (t[t != NEVER] - t0_ns) // _NS
        return s[(s >= 0) & (s < length)]

    def count(t: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        if weights is None:
            return np.bincount(sec(t), minlength=length)[:length]
        keep = t != NEVER
        s = (t[keep] - t0_ns) // _NS
        w = weights[keep]
        inside = (s >= 0) & (s < length)
        return np.bincount(s[inside], weights=w[inside], minlength=length)[:length].astype(np.int64)

    drop = cols.table(Kind.LOAD_DROPPED)
    dropped = count(drop["intended"], drop["count"]) if len(drop) else np.zeros(length, dtype=np.int64)
    offered = count(msgs.intended) + dropped
    delivered = count(msgs.first_esp)
    replies = {}
    for code in np.unique(rep["code"]):
        replies["cut" if code < 0 else str(int(code))] = count(rep["t"][rep["code"] == code])
    esp_accepted = count(esp_t)
    took = msgs.sut_in != NEVER
    backlog = np.cumsum(count(msgs.sut_in[took])) - np.cumsum(count(msgs.left_at[took]))

    # Reordering: deliveries (in delivery order; at one instant, by intended time: an order the ledgers'
    # file order cannot change) whose intended time is below the running maximum.
    got = np.flatnonzero(msgs.first_esp != NEVER)
    order = got[np.lexsort((msgs.intended[got], msgs.first_esp[got]))]
    intended_in_order = msgs.intended[order]
    running = np.maximum.accumulate(intended_in_order)
    inversions = np.zeros(len(order), dtype=bool)
    inversions[1:] = intended_in_order[1:] < running[:-1]
    reordered = count(msgs.first_esp[order][inversions])

    p50, p95, p99 = _per_second_percentiles(msgs, order, t0_ns, length)
    q = cols.table(Kind.SUT_QUEUE)
    depth = None
    if len(q):
        s = (q["t"] - t0_ns) // _NS
        inside = (s >= 0) & (s < length)
        depth = np.full(length, np.nan)
        depth[s[inside]] = q["depth"][inside]  # later samples overwrite earlier ones in the same second
    return Series(
        t0_ns=t0_ns,
        offered=offered,
        dropped=dropped,
        sut_accepted=count(msgs.sut_in),
        delivered=delivered,
        esp_accepted=esp_accepted,
        esp_replies=replies,
        esp_attempts=esp_accepted + count(rep["t"]),
        backlog=np.maximum(backlog, 0),
        reordered=reordered,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        queue_depth=depth,
    )


def _per_second_percentiles(
    msgs: Messages, order: np.ndarray, t0_ns: int, length: int
) -> tuple[np.ndarray, ...]:
    """Nearest-rank p50/p95/p99 of end-to-end latency per delivery second, vectorised."""
    if len(order) == 0:
        return tuple(np.full(length, np.nan) for _ in range(3))
    s = (msgs.first_esp[order] - t0_ns) // _NS
    lat = (msgs.first_esp[order] - msgs.intended[order]) / 1e6
    inside = (s >= 0) & (s < length)
    s, lat = s[inside], lat[inside]
    # One float sort instead of a lexsort: the second, plus the latency scaled into [0, 1).
    frac = (lat - lat.min()) / (float(np.ptp(lat)) + 1.0) if len(lat) else lat
    srt = np.argsort(s + frac, kind="stable")
    s, lat = s[srt], lat[srt]
    n_per = np.bincount(s, minlength=length)[:length]
    starts = np.concatenate(([0], np.cumsum(n_per)[:-1]))
    out = []
    for q in (0.50, 0.95, 0.99):
        res = np.full(length, np.nan)
        has = n_per > 0
        rank = np.ceil(q * n_per[has]).astype(np.int64) - 1
        res[has] = lat[starts[has] + np.maximum(rank, 0)]
        out.append(res)
    return tuple(out)


def percentiles(values_ms: np.ndarray) -> dict[str, float | int | None]:
    """p50..p99.9, max, mean and count of a latency sample: exact nearest-rank values over every message
    (no histogram needed at this scale); None when empty."""
    if len(values_ms) == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None, "count": 0}
    qs = np.percentile(values_ms, list(PERCENTILES.values()), method="inverted_cdf")
    out: dict[str, float | int | None] = {k: round(float(q), 3) for k, q in zip(PERCENTILES, qs, strict=True)}
    out["max"] = round(float(values_ms.max()), 3)
    out["mean"] = round(float(values_ms.mean()), 3)
    out["count"] = len(values_ms)
    return out
