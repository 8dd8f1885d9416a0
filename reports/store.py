"""A run's ledgers as DuckDB tables: the one reader of the reports, in memory bounded by ``MEMORY_LIMIT``
whatever the run's length (past it, DuckDB spills to a temporary directory inside the run directory).

``open_run(run_dir)`` reads every segment (``mailstorm.ledger.segments``: plain ``.jsonl`` and zstd
``.jsonl.zst`` alike; DuckDB's JSON reader decompresses them itself) once, without a parse in Python, and
leaves in one connection:

- table ``rec``: one row per ledger line, the columns the reports read (``_TYPED``; NULL where a line
  lacks the field; other keys are not read), ``f`` the index of its file in ``Store.paths`` and ``esp_i``
  the index in ``Store.esps`` of the ESP whose file it is (-1: no ESP's);
- table ``msg``: one row per submitted message with its times and outcome (``fate.MESSAGES_SQL``: the
  fate rules' SQL form, beside their Python form), and ``unmatched`` (``esp_unmatched``);
- in Python, the few records read whole, as their declared classes: the timeline (run.*, chaos.*,
  probe, action, load.started and load.finished, alerts) and the ``WHOLE`` kinds a section reads one by
  one (pool members and servers, campaign lists, triggers and answers, analytics polls): their other
  fields are read as JSON text columns and decoded into the record classes here;
- ``acts``: the records that name the fault or chaos-proxy toxic that acted on traffic, counted per name
  and second (``esp.fault``, ``esp.replied``, ``proxy.acted``; a listener's outage begin/end is a change
  of state, not an action), so a fault window can be told whether its fault touched anything.

Lines as today's and older ledgers hold them are all read: unknown kinds and keys are ignored (the ledger
contract allows them); a torn line (a writer killed mid-write, or any line that is not a JSON object with
a ``k``) is skipped and counted in ``torn_lines``; a timeline line that does not fit its declaration is
counted in ``skipped``; a line of another kind with a value of the wrong type (a damaged or hand-edited
ledger) is a one-line error naming its file. DuckDB reads strictly first (one pass; a clean run pays
nothing more); a line it cannot take stops that read, and only then the run is read again leniently
and each segment strictly on its own, and the segments that fail are looked at line by line in Python
to count and name what is wrong (only a damaged run pays).

Why DuckDB (README, dependencies; docs/benchmarks.md, "Analysis engines"): on the same 1 M-message ledger
it used 0.7x the numpy path's CPU (Polars' streaming engine 0.6x), and at 10 M messages its memory stayed
within its budget where Polars' grew to 5.8 GB; it reads newline-delimited JSON (zstd too) in C.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
import types
import typing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import orjson

from mailstorm.errors import UserError
from mailstorm.ledger import (
    Action,
    AlertFiring,
    AlertResolved,
    AnalyticsProbe,
    CampaignAnswer,
    CampaignList,
    CampaignTrigger,
    ChaosBegin,
    ChaosEnd,
    InvalidRecord,
    Kind,
    LoadFinished,
    LoadStarted,
    PoolMember,
    PoolServer,
    Probe,
    Record,
    RunAborted,
    RunEnded,
    RunPhase,
    RunStarted,
    decode,
    open_segment,
    segments,
    source_of,
)
from mailstorm.reports.fate import MESSAGES_SQL, NEVER

MEMORY_LIMIT = "512MB"  # DuckDB's own budget; past it, its sorts and hash tables spill to disk
THREADS = 2  # this machine's cores: more buys nothing and costs a buffer each
NS = 1_000_000_000
TIMELINE: tuple[type[Record], ...] = (
    RunStarted, RunPhase, RunEnded, RunAborted, ChaosBegin, ChaosEnd, Probe, Action,
    LoadStarted, LoadFinished, AlertFiring, AlertResolved,
)  # fmt: skip
# Other kinds read whole (few records a run), for the sections that read them one by one.
WHOLE: tuple[type[Record], ...] = (
    PoolMember, PoolServer, CampaignList, CampaignTrigger, CampaignAnswer, AnalyticsProbe,
)  # fmt: skip
# The columns every line is read as (a line lacking one: NULL). A value DuckDB cannot cast stops its
# strict read (``_load``), and the segment holding it is looked at line by line.
_TYPED = {
    "k": "VARCHAR", "t": "BIGINT", "id": "VARCHAR", "intended": "BIGINT", "start": "BIGINT",
    "end": "BIGINT", "ok": "BOOLEAN", "code": "BIGINT", "phase": "VARCHAR", "acked": "BOOLEAN",
    "held": "JSON", "campaign": "VARCHAR", "count": "BIGINT", "depth": "BIGINT", "complete": "BOOLEAN",
    "fault": "VARCHAR", "toxic": "VARCHAR", "state": "VARCHAR", "loop_lag_ms": "DOUBLE",
}  # fmt: skip
# esp.accepted's ``held`` is a flag, sut.listed's a count: read as JSON, kept as esp.accepted's flag.
_HELD = f"CASE WHEN k = '{Kind.ESP_ACCEPTED}' THEN try_cast(held AS BOOLEAN) END AS held"
_KNOWN = {str(k) for k in Kind}
_WHOLE_KINDS = {str(cls.kind): cls for cls in TIMELINE + WHOLE}
# A null read back is kept for a field its class requires (``status: int | None`` with no default: an
# unanswered probe's), left out for one with a default (so an absent field takes it): DuckDB reads a
# null and an absent key alike.
_REQUIRED = {
    kind: {f.encode_name for f in msgspec.structs.fields(cls) if f.required}
    for kind, cls in _WHOLE_KINDS.items()
}
_TIMELINE_KINDS = {str(cls.kind) for cls in TIMELINE}
_ACTORS = {str(Kind.ESP_FAULT): "fault", str(Kind.ESP_REPLIED): "fault", str(Kind.PROXY_ACTED): "toxic"}
UNNAMED_ESP = "esp"  # the name of the ESP of a run with one (its files carry none)


_ESP_FILE = re.compile(r"^esp-(?:([a-z][a-z0-9_]*)-)?smtp-\d+$")  # mailstorm.fake_esp.spec.ledger_source


def esp_of_file(source: str) -> str | None:
    """The ESP a ledger source belongs to (``esp-<name>-smtp-N``; the only ESP of a run writes
    ``esp-smtp-N``); None for a source no ESP wrote."""
    m = _ESP_FILE.match(source)
    return None if m is None else (m.group(1) or UNNAMED_ESP)


@dataclass
class Store:
    """One run's ledgers, open: ``con`` holds tables ``rec``, ``msg`` and ``unmatched``; close it (or use
    ``with``) to free its memory and spill files."""

    con: Any
    paths: list[Path]
    esps: list[str]  # ESP names in file order: rec's "esp_i" column indexes it
    timeline: list[Record]
    whole: dict[type[Record], list[Record]]
    acts: dict[str, Counter[int]]
    torn_lines: int = 0
    skipped: int = 0
    _tmp: Path | None = field(default=None, repr=False)
    _tables: set[str] = field(default_factory=set, repr=False)
    _damaged: frozenset[int] = field(
        default=frozenset(), repr=False
    )  # segments _load could not read strictly

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def kinds(self, classes: tuple[type[Record], ...]) -> str:
        """The name of a table of every line of the kinds ``classes`` with every field they declare
        (columns typed from the classes; a field two of them type differently is JSON text), plus ``f``
        and ``esp_i`` as in ``rec``: read again from the segments that hold such lines, once per set of
        kinds. For what only some sections read (a campaign's recipients, webhook events), so that the
        one pass every report pays reads the few columns the fate rules and series need."""
        name = "kinds_" + "_".join(sorted(str(c.kind).replace(".", "_") for c in classes))
        if name not in self._tables:
            _read_kinds(self.con, name, self.paths, classes, as_json=False, damaged=self._damaged)
            self._tables.add(name)
        return name

    def one(self, sql: str, params: list[Any] | None = None) -> tuple[Any, ...]:
        """The first row of ``sql``."""
        return self.con.execute(sql, params or []).fetchone()

    def value(self, sql: str, params: list[Any] | None = None) -> Any:
        """The first column of the first row of ``sql``."""
        return self.one(sql, params)[0]

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, params or []).fetchall()

    def numpy(self, sql: str, params: list[Any] | None = None) -> dict[str, np.ndarray]:
        """The columns of ``sql`` as numpy arrays (for results of a bounded size: per second, per window)."""
        return {k: np.asarray(v) for k, v in self.con.execute(sql, params or []).fetchnumpy().items()}

    def per_second(self, times: str, t0_ns: int, n: int, weight: str = "1") -> np.ndarray:
        """How many rows of ``times`` (a query whose column ``t`` is a time in ns; ``weight`` an
        expression over its columns to sum instead of counting) fall in each second from ``t0_ns``:
        an int64 array of ``n``, rows outside it (and NEVER) left out."""
        out = np.zeros(max(n, 0), dtype=np.int64)
        if n <= 0:
            return out
        got = self.numpy(
            f"""SELECT s, sum({weight})::BIGINT AS c FROM (SELECT *, (t - {t0_ns}) // {NS} AS s FROM ({times})
                WHERE t IS NOT NULL AND t != {NEVER} AND t >= {t0_ns}) WHERE s < {n} GROUP BY s"""
        )
        out[got["s"].astype(np.int64)] = got["c"]
        return out

    def percentiles(
        self,
        value: str,
        where: str = "true",
        table: str = "msg",
        qs: dict[str, float] | None = None,
        scale: float = 1.0,
        curve: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Exact nearest-rank percentiles (numpy's ``inverted_cdf``) of ``value`` over the rows of
        ``table`` where ``where`` holds, plus max, mean and count, each divided by ``scale`` (an integer
        ``value`` in ns with ``scale=1e6`` gives numpy's figures of the same values in ms: the mean from
        the exact sum); None figures when there are none. With ``curve`` (quantiles in [0, 1]), also
        ``"curve"``: ``np.quantile(values, curve) / scale`` (linear between the two nearest ranks; empty
        when there are no values), from the same sort."""
        qs = qs or PERCENTILES
        n, top, total = self.one(
            f"SELECT count(v), max(v), sum(v) FROM (SELECT {value} AS v FROM {table} WHERE {where})"
        )
        if n == 0:
            out = {**dict.fromkeys(qs), "max": None, "mean": None, "count": 0}
            return out if curve is None else {**out, "curve": np.zeros(0)}
        ranks = {k: rank(n, q) for k, q in qs.items()}
        wanted = list(ranks.values())
        if curve is not None:
            at = (n - 1) * np.asarray(curve, dtype=np.float64)
            lo = np.floor(at).astype(np.int64)
            hi = np.minimum(lo + 1, n - 1)
            wanted += (lo + 1).tolist() + (hi + 1).tolist()  # 1-based, as row_number counts
        # One parallel sort; the values at the ranks wanted (never a row per message into Python).
        got = self.numpy(
            f"""SELECT i, v FROM (SELECT v, row_number() OVER (ORDER BY v) AS i
                FROM (SELECT {value} AS v FROM {table} WHERE {where}) WHERE v IS NOT NULL)
                SEMI JOIN (SELECT unnest(?::BIGINT[]) AS i) USING (i) ORDER BY i""",
            [sorted(set(wanted))],
        )

        def at_rank(r: Any) -> Any:
            return got["v"][np.searchsorted(got["i"], r)]

        out: dict[str, Any] = {k: at_rank(r).item() / scale for k, r in ranks.items()}
        out["max"] = top / scale
        out["mean"] = total / n / scale
        out["count"] = int(n)
        if curve is not None:
            v_lo, v_hi = at_rank(lo + 1) / scale, at_rank(hi + 1) / scale
            out["curve"] = v_lo + (v_hi - v_lo) * (at - lo)
        return out


PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "p99_9": 99.9}


def rank(n: int, q: float) -> int:
    """The 1-based rank numpy's ``inverted_cdf`` picks for percentile ``q`` of ``n`` sorted values."""
    i = n * q / 100 - 1
    return max(int(np.floor(i)) + (0 if i == np.floor(i) else 1), 0) + 1


def open_run(ledger_dir: Path) -> Store:
    """Read every segment of ``ledger_dir`` into a ``Store`` (spilling inside its run directory)."""
    ledger_dir = Path(ledger_dir)
    paths = segments(ledger_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".store-", dir=ledger_dir.parent))
    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "threads": THREADS})
    try:
        con.execute(f"SET temp_directory = '{_quote(str(tmp))}'")
        con.execute("SET preserve_insertion_order = false")  # only the whole records' read needs it (below)
        con.execute("SET enable_progress_bar = false")  # a long read must not draw on the user's console
        esps: list[str] = []
        files = []
        for i, path in enumerate(paths):
            esp = esp_of_file(source_of(path))
            if esp is not None and esp not in esps:
                esps.append(esp)
            files.append((i, str(path), -1 if esp is None else esps.index(esp)))
        con.execute("CREATE TABLE files (f INTEGER, filename VARCHAR, esp_i INTEGER)")
        if files:
            con.executemany("INSERT INTO files VALUES (?, ?, ?)", files)
        suspects = _load(con, paths)
        torn = _torn(con, paths, suspects)
        timeline, whole, skipped = _whole(con, paths)
        con.execute(MESSAGES_SQL)
        acts = _acts(con)
        store = Store(
            con, paths, esps, timeline, whole, acts, torn, skipped, tmp, _damaged=frozenset(suspects)
        )
    except BaseException:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return store


def _load(con: Any, paths: list[Path]) -> list[int]:
    """Table ``rec``; the indexes of the segments that need a look line by line (none for a clean run).

    DuckDB reads strictly first: one pass, and any line it cannot take (torn, not a JSON object, a value
    it cannot cast) stops it. Then, and only then, it reads leniently (such lines skipped, such values
    NULL) and each segment is read strictly again on its own to find the ones to look at."""
    cols = _TYPED
    names = ", ".join(_HELD if n == "held" else f'r."{n}"' for n in cols)
    if not paths:
        nulls = ", ".join(f'NULL::{"BOOLEAN" if n == "held" else t} AS "{n}"' for n, t in cols.items())
        con.execute(f"CREATE TABLE rec AS SELECT {nulls}, 0 AS f, -1 AS esp_i WHERE false")
        return []
    spec = "{" + ", ".join(f"'{n}': '{t}'" for n, t in cols.items()) + "}"

    def read(lenient: bool) -> None:
        con.execute(
            f"""CREATE OR REPLACE TABLE rec AS SELECT {names}, files.f, files.esp_i FROM read_json(?,
                format = 'newline_delimited', compression = 'auto', ignore_errors = {str(lenient).lower()},
                filename = true, columns = {spec}) AS r JOIN files ON r.filename = files.filename""",
            [[str(p) for p in paths]],
        )

    try:
        read(lenient=False)
        return []
    except duckdb.InvalidInputException:
        read(lenient=True)
    suspects = []
    for i, path in enumerate(paths):
        try:
            con.execute(  # every column used, or DuckDB would not cast (nor fail on) its values
                f"""SELECT {", ".join(f'count("{n}")' for n in cols)} FROM read_json(?,
                    format = 'newline_delimited', compression = 'auto', columns = {spec})""",
                [str(path)],
            ).fetchone()
        except duckdb.InvalidInputException:
            suspects.append(i)
    return suspects


def _torn(con: Any, paths: list[Path], suspects: list[int]) -> int:
    """The run's torn lines: JSON objects without a kind, counted in SQL, and what the segments DuckDB
    could not read strictly hold, looked at line by line."""
    kindless = dict(con.execute("SELECT f, count(*) FILTER (WHERE k IS NULL) FROM rec GROUP BY f").fetchall())
    return sum(n for f, n in kindless.items() if f not in suspects) + sum(
        _explain(paths[i]) for i in suspects
    )


def _explain(path: Path) -> int:
    """A segment DuckDB could not read strictly: its torn lines (not a JSON object with a ``k``; blank
    lines are nothing); a line of a known kind with a value DuckDB cannot take is the user's to see (a
    timeline kind's is left to its class: ``skipped``; an unknown kind is ignored, as the contract says)."""
    torn = 0
    wrong: dict[str, int] = {}
    with open_segment(path) as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError:
                torn += 1
                continue
            if not isinstance(obj, dict):
                torn += 1
                continue
            if "k" not in obj:
                torn += 1  # an object that is no record: nothing a reader can use
                continue
            if _fits(obj):
                continue
            kind = obj.get("k")
            if kind in _KNOWN and kind not in _TIMELINE_KINDS:
                wrong[str(kind)] = wrong.get(str(kind), 0) + 1
    if wrong:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(wrong.items()))
        raise UserError(f"{path}: records with a value of the wrong type: {kinds}")
    return torn


def _fits(obj: dict[str, Any]) -> bool:
    """Whether DuckDB takes every typed column of a line: a number for a number (a bool is none, nor one
    past 64 bits for a BIGINT; it rounds a fraction), anything for a flag or a text (it casts them)."""
    for name, typ in _TYPED.items():
        v = obj.get(name)
        if v is None or typ in ("BOOLEAN", "VARCHAR", "JSON"):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if typ == "BIGINT" and not -(2**63) <= v < 2**63:
            return False
    return True


def _whole(con: Any, paths: list[Path]) -> tuple[list[Record], dict[type[Record], list[Record]], int]:
    """The timeline and the ``WHOLE`` kinds' records as their classes; timeline lines that do not fit
    their declaration are counted (the others are skipped, as every reader skips them)."""
    # Records at one instant keep the order the old readers gave them: file by file, line by line.
    with in_order(con):
        _read_kinds(con, "whole", paths, TIMELINE + WHOLE, as_json=True)
    cur = con.execute("SELECT f, * EXCLUDE (f, esp_i) FROM whole")
    names = [d[0] for d in cur.description][1:]
    kind = names.index("k")
    timeline: list[Record] = []
    whole: dict[type[Record], list[Record]] = {cls: [] for cls in WHOLE}
    skipped = 0
    lines = []
    for f, *row in cur.fetchall():
        required = _REQUIRED[row[kind]]
        line = {
            n: (v if i == kind or v is None else orjson.loads(v))
            for i, (n, v) in enumerate(zip(names, row, strict=True))
            if v is not None or n in required
        }
        t = line.get("t")
        lines.append((t if isinstance(t, int) and not isinstance(t, bool) else 0, f, line))
    lines.sort(key=lambda x: x[:2])  # stable: records at one instant in file, then line, order
    for _, _, line in lines:
        try:
            rec = decode(orjson.dumps(line))
        except InvalidRecord:
            skipped += line["k"] in _TIMELINE_KINDS
            continue
        if line["k"] in _TIMELINE_KINDS:
            timeline.append(rec)
        else:
            whole[type(rec)].append(rec)
    con.execute("DROP TABLE whole")
    return timeline, whole, skipped


def _read_kinds(
    con: Any,
    name: str,
    paths: list[Path],
    classes: tuple[type[Record], ...],
    *,
    as_json: bool,
    damaged: frozenset[int] = frozenset(),
) -> None:
    """Table ``name``: the lines of the kinds ``classes`` in ``paths`` with every field they declare.
    Only the segments ``rec`` found such lines in are read, each with the fields of the kinds it holds
    (a load generator's segment holds a million submissions and two load.* records: it is read for
    those two kinds' few fields, not for every field of every kind). ``as_json``: every field as JSON
    text (their classes judge the values), torn lines skipped; else typed from the classes, read
    strictly (a value DuckDB cannot cast is the user's to see, naming its file and line) but for the
    ``damaged`` segments, whose torn lines ``_load`` counted and which are read leniently."""
    by_kind = {str(c.kind): c for c in classes}
    kinds = ", ".join(f"'{k}'" for k in by_kind)
    held: dict[int, set[str]] = {}
    for f, k in con.execute(f"SELECT DISTINCT f, k FROM rec WHERE k IN ({kinds})").fetchall():
        held.setdefault(f, set()).add(k)
    groups: dict[tuple[frozenset[str], bool], list[int]] = {}
    for f, ks in held.items():
        groups.setdefault((frozenset(ks), as_json or f in damaged), []).append(f)
    parts = []
    for (ks, lenient), fs in groups.items():
        cols = _columns(tuple(by_kind[k] for k in sorted(ks)), as_json)
        spec = "{" + ", ".join(f"'{n}': '{t}'" for n, t in cols.items()) + "}"
        names = ", ".join(f'r."{n}"' for n in cols)
        where = ", ".join(f"'{_quote(str(paths[f]))}'" for f in sorted(fs))
        parts.append(
            f"""SELECT {names}, files.f, files.esp_i FROM read_json([{where}],
                format = 'newline_delimited', compression = 'auto', ignore_errors = {str(lenient).lower()},
                filename = true, columns = {spec}) AS r JOIN files ON r.filename = files.filename
                WHERE r.k IN ({kinds})"""
        )
    if not parts:
        cols = _columns(classes, as_json)
        nulls = ", ".join(f'NULL::{t} AS "{n}"' for n, t in cols.items())
        con.execute(f"CREATE TABLE {name} AS SELECT {nulls}, 0 AS f, -1 AS esp_i WHERE false")
        return
    try:
        con.execute(f"CREATE TABLE {name} AS " + " UNION ALL BY NAME ".join(parts))
    except duckdb.InvalidInputException as exc:  # (DuckDB's first line names the file and the line)
        raise UserError(str(exc).splitlines()[0].removeprefix("Invalid Input Error: ")) from None


def _columns(classes: tuple[type[Record], ...], as_json: bool) -> dict[str, str]:
    """Every field the classes declare, as DuckDB column types (``k`` always text)."""
    types: dict[str, set[str]] = {}
    for cls in classes:
        for f in msgspec.structs.fields(cls):
            types.setdefault(f.encode_name, set()).add(_sql_type(f.type))
    cols = {"k": "VARCHAR", "t": "JSON" if as_json else "BIGINT"}
    for n, ts in sorted(types.items()):
        if n not in cols:
            cols[n] = "JSON" if as_json or len(ts) > 1 else next(iter(ts))
    return cols


def _sql_type(tp: Any) -> str:
    """The DuckDB type of a declared field's type (an optional one as its value's; any other: JSON)."""
    args = (
        [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType)
        else [tp]
    )
    if len(args) != 1:
        return "JSON"
    (tp,) = args
    if typing.get_origin(tp) is list and typing.get_args(tp) == (str,):
        return "VARCHAR[]"
    return {bool: "BOOLEAN", int: "BIGINT", float: "DOUBLE", str: "VARCHAR"}.get(tp, "JSON")


def _acts(con: Any) -> dict[str, Counter[int]]:
    """Records that name the fault or toxic that acted, per name and epoch second."""
    which = " OR ".join(f"(k = '{k}' AND {col} IS NOT NULL AND {col} != '')" for k, col in _ACTORS.items())
    acts: dict[str, Counter[int]] = {}
    for name, sec, n in con.execute(
        f"""SELECT coalesce(fault, toxic), t // {NS}, count(*) FROM rec
            WHERE ({which}) AND state IS NULL AND t IS NOT NULL GROUP BY ALL"""
    ).fetchall():
        acts.setdefault(str(name), Counter())[int(sec)] += int(n)
    return acts


@contextlib.contextmanager
def in_order(con: Any) -> Iterator[None]:
    """Statements run inside keep the files' order, line by line (DuckDB reads faster without it, and
    only a few reads need it: records at one instant, a list's rows)."""
    keep = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()[0]
    con.execute("SET preserve_insertion_order = true")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {'true' if keep else 'false'}")


def _quote(text: str) -> str:
    return text.replace("'", "''")
