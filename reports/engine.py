"""The out-of-core path: a run's outcomes, latency percentiles and per-second series computed by DuckDB
straight from its ledger segments, in memory bounded by a limit, not by the run's length.

``core(run_dir)`` gives what ``mailstorm.reports.ingest`` + ``fate.classify`` + ``analysis.percentiles``
+ ``series.build_series`` give for the same ledgers (tests/reports/test_engine.py holds them equal on
every known-answer run), without holding a row per message in Python: DuckDB reads the segments
(``mailstorm.ledger.segments``: plain ``.jsonl`` and, once segments are compressed, ``.jsonl.zst``, which
its JSON reader decompresses itself: ``compression='auto'`` picks zstd from the name), keeps the few
columns the fate rules use (``fate.MESSAGES_SQL``: the rules' SQL form lives with their Python form),
and spills to a temporary directory inside the run directory past ``MEMORY_LIMIT``. Latency percentiles
are exact at every size (nearest rank over a sort DuckDB spills to disk), never histogram estimates.

Why DuckDB (README, dependencies; docs/benchmarks.md, "Analysis engines"): on the same 1 M-message ledger
it used 0.7x the numpy path's CPU (Polars' streaming engine 0.6x), and at 10 M messages its memory stayed
within its budget where Polars' grew to 5.8 GB; it reads newline-delimited JSON (zstd-compressed too)
without a parse in Python, and the fate rules' SQL is plain text kept beside their Python form.

Not yet the reports' path: ``analysis.analyze`` still reads every run through ingest + classify, since
recovery, capacity, effects, the load check, backups, pools and failover read per-message numpy columns.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mailstorm.ledger import Kind, segments
from mailstorm.reports.fate import (
    MESSAGES_SQL,
    NEVER,
    OUTCOMES,
    REJECTED,
    SQL_KINDS,
    UNACKED_SQL,
)
from mailstorm.reports.series import MAX_SECONDS, Series

MEMORY_LIMIT = "512MB"  # DuckDB's own budget; past it, its sorts and hash tables spill to disk
THREADS = 2  # this machine's cores: more buys nothing and costs a buffer each
_NS = 1_000_000_000
_PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99_9": 99.9}  # as analysis.PERCENTILES
# Each ledger line read as these columns (a line lacking one: NULL); other keys are not read at all.
_COLUMNS = {
    "k": "VARCHAR", "t": "BIGINT", "id": "VARCHAR", "intended": "BIGINT", "start": "BIGINT",
    "end": "BIGINT", "ok": "BOOLEAN", "code": "BIGINT", "phase": "VARCHAR", "acked": "BOOLEAN",
    "held": "BOOLEAN", "campaign": "VARCHAR", "count": "BIGINT", "depth": "BIGINT", "complete": "BOOLEAN",
}  # fmt: skip
_KINDS = (*SQL_KINDS, str(Kind.LOAD_DROPPED), str(Kind.SUT_QUEUE), str(Kind.RUN_STARTED))


@dataclass
class Core:
    """Outcomes, latency and series of one run, as the reports show them."""

    counts: dict[str, int]
    e2e: dict[str, float | int | None]
    submit: dict[str, float | int | None]
    series: Series
    t0_ns: int
    submit_attempts: int
    unacked: int
    rejected_at_stop: int
    esp_unmatched: int
    amplification: float  # ESP records per message that reached the ESP


def connect(tmp_dir: Path) -> Any:
    """A DuckDB connection held to ``MEMORY_LIMIT`` and ``THREADS``, spilling into ``tmp_dir``."""
    import duckdb  # only this path needs it

    con = duckdb.connect(config={"memory_limit": MEMORY_LIMIT, "threads": THREADS})
    con.execute(f"SET temp_directory = '{_quote(str(tmp_dir))}'")
    con.execute("SET preserve_insertion_order = false")  # no query here depends on the files' order
    return con


def load(con: Any, paths: list[Path]) -> None:
    """The lines of the ledger segments ``paths`` (``.jsonl``, or zstd-compressed ``.jsonl.zst``) of the
    kinds the fate rules and the series read, as table ``rec``. A torn line (a writer killed mid-write)
    or a line whose field has the wrong type is skipped."""
    files = [str(p) for p in paths]
    cols = "{" + ", ".join(f"'{name}': '{typ}'" for name, typ in _COLUMNS.items()) + "}"
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    if not files:
        con.execute(f"CREATE OR REPLACE TABLE rec AS SELECT * FROM (SELECT {_nulls()}) WHERE false")
        return
    con.execute(
        f"""CREATE OR REPLACE TABLE rec AS SELECT * FROM read_json(?, format = 'newline_delimited',
            compression = 'auto', ignore_errors = true, columns = {cols}) WHERE k IN ({kinds})""",
        [files],
    )


def core(run_dir: Path, t0_ns: int | None = None) -> Core:
    """Outcomes, e2e and submission latency percentiles and the per-second series of ``run_dir``, second 0
    starting at ``t0_ns`` (the run's zero as analysis.analyze finds it when not given)."""
    run_dir = Path(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".engine-", dir=run_dir))  # spills stay with the run, then go
    try:
        con = connect(tmp)
        try:
            load(con, segments(run_dir / "ledger"))
            con.execute(MESSAGES_SQL)
            t0 = _t0(con, run_dir) if t0_ns is None else t0_ns
            return _core(con, t0)
        finally:
            con.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _core(con: Any, t0: int) -> Core:
    per = dict(con.execute("SELECT outcome, count(*) FROM msg GROUP BY outcome").fetchall())
    counts = {"submitted": sum(per.values())}
    counts.update({name: int(per.get(i, 0)) for i, name in enumerate(OUTCOMES)})
    attempts, rejected_at_stop, amplification = con.execute(
        f"""SELECT coalesce(sum(submit_attempts), 0),
                   count(*) FILTER (WHERE outcome = {REJECTED} AND stopped),
                   avg(esp_attempts) FILTER (WHERE esp_attempts > 0) FROM msg"""
    ).fetchone()
    unmatched = con.execute("SELECT n FROM unmatched").fetchone()[0]
    return Core(
        counts=counts,
        e2e=_percentiles(con, "esp_delivered"),
        submit=_percentiles(con, "submit_ok_end"),
        series=_series(con, t0),
        t0_ns=t0,
        submit_attempts=int(attempts),
        unacked=int(con.execute(UNACKED_SQL).fetchone()[0]),
        rejected_at_stop=int(rejected_at_stop),
        esp_unmatched=int(unmatched),
        amplification=1.0 if amplification is None else float(amplification),
    )


def _t0(con: Any, run_dir: Path) -> int:
    """The run's zero as analysis.analyze has it: run.started, else run.json's started_ns, else the
    earliest intended send."""
    from mailstorm.runinfo import load_run_info

    started = con.execute(f"SELECT min(t) FROM rec WHERE k = '{Kind.RUN_STARTED}'").fetchone()[0]
    if started is not None:
        return int(started)
    first = con.execute("SELECT min(intended) FROM msg").fetchone()[0]
    return load_run_info(run_dir).started_ns or int(first or 0)


def _percentiles(con: Any, end: str) -> dict[str, float | int | None]:
    """analysis.percentiles of ``end - intended`` in ms over the messages with an ``end``: the same
    nearest ranks (numpy's inverted_cdf), found by one sort in DuckDB."""
    got, lat = f"FROM msg WHERE {end} != {NEVER}", f"{end} - intended"
    n, top, total = con.execute(f"SELECT count(*), max({lat}), sum({lat}) {got}").fetchone()
    if n == 0:
        return {**dict.fromkeys(_PERCENTILES), "max": None, "mean": None, "count": 0}
    # numpy's inverted_cdf index: n*q - 1, rounded up unless whole, floored at 0
    idx = n * (np.asarray(list(_PERCENTILES.values())) / 100) - 1
    ranks = [max(int(np.floor(i)) + (0 if i == np.floor(i) else 1), 0) + 1 for i in idx]
    values = dict(
        con.execute(
            f"""SELECT i, v FROM (SELECT ({lat}) / 1e6 AS v, row_number() OVER (ORDER BY {lat}) AS i {got})
                WHERE i IN ({", ".join(map(str, sorted(set(ranks))))})"""
        ).fetchall()
    )
    out: dict[str, float | int | None] = {
        k: round(float(values[r]), 3) for k, r in zip(_PERCENTILES, ranks, strict=True)
    }
    out["max"] = round(top / 1e6, 3)
    out["mean"] = round(float(total) / n / 1e6, 3)
    out["count"] = int(n)
    return out


def _series(con: Any, t0: int) -> Series:
    """series.build_series over table ``msg`` and the ESP's records, binned in DuckDB."""
    last = con.execute(
        f"""SELECT max(x) FROM (
              SELECT greatest(intended, CASE WHEN sut_in != {NEVER} THEN sut_in END,
                              CASE WHEN left_at != {NEVER} THEN left_at END) AS x FROM msg
              UNION ALL SELECT max(t) FROM rec WHERE k IN ('{Kind.ESP_ACCEPTED}', '{Kind.ESP_REPLIED}')
                  AND NOT (k = '{Kind.ESP_ACCEPTED}' AND campaign IS NOT NULL))"""
    ).fetchone()[0]
    last = t0 if last is None else int(last)
    length = max(int(min((last - t0) // _NS + 1, MAX_SECONDS)), 1)

    def sec(col: str) -> str:  # the second an event falls in; NULL outside the series (and for NEVER)
        return (
            f"CASE WHEN {col} != {NEVER} AND {col} >= {t0} AND ({col} - {t0}) // {_NS} < {length} "
            f"THEN ({col} - {t0}) // {_NS} END"
        )

    def bins(sql: str) -> np.ndarray:
        """An int64 array of ``length`` from rows (second, value)."""
        out = np.zeros(length, dtype=np.int64)
        rows = con.execute(sql).fetchnumpy()
        if len(rows["s"]):
            out[rows["s"].astype(np.int64)] = rows["n"]
        return out

    def count(col: str, table: str = "msg", where: str = "true") -> np.ndarray:
        return bins(
            f"SELECT s, count(*) AS n FROM (SELECT {sec(col)} AS s FROM {table} WHERE {where}) "
            "WHERE s IS NOT NULL GROUP BY s"
        )

    esp = f"k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL"
    rep = f"k = '{Kind.ESP_REPLIED}'"
    dropped = bins(
        f"""SELECT s, sum(coalesce("count", 0))::BIGINT AS n
            FROM (SELECT {sec("coalesce(intended, 0)")} AS s, "count" FROM rec
                  WHERE k = '{Kind.LOAD_DROPPED}')
            WHERE s IS NOT NULL GROUP BY s"""
    )
    replies = {}
    for (code,) in con.execute(
        f"SELECT DISTINCT coalesce(code, -1) AS c FROM rec WHERE {rep} ORDER BY c"
    ).fetchall():
        replies["cut" if code < 0 else str(int(code))] = count(
            "t", "rec", f"{rep} AND coalesce(code, -1) = {code}"
        )
    esp_accepted = count("t", "rec", esp)
    took = f"sut_in != {NEVER}"
    backlog = np.cumsum(count("sut_in", where=took)) - np.cumsum(count("left_at", where=took))
    # Reordering: deliveries in delivery order (ties by intended time) intended before one delivered earlier.
    reordered = count(
        "first_esp",
        f"""(SELECT first_esp, intended < max(intended) OVER (ORDER BY first_esp, intended
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS inverted
            FROM msg WHERE first_esp != {NEVER})""",
        "inverted",
    )
    p50, p95, p99 = _per_second_percentiles(con, sec("first_esp"), length)
    depth = None
    if con.execute(f"SELECT count(*) FROM rec WHERE k = '{Kind.SUT_QUEUE}'").fetchone()[0]:
        depth = np.full(length, np.nan)
        rows = con.execute(
            f"""SELECT s, arg_max(coalesce(depth, 0), t) AS d FROM (SELECT {sec("t")} AS s, depth, t FROM rec
                WHERE k = '{Kind.SUT_QUEUE}') WHERE s IS NOT NULL GROUP BY s"""
        ).fetchnumpy()
        depth[rows["s"].astype(np.int64)] = rows["d"]
    return Series(
        t0_ns=t0,
        offered=count("intended") + dropped,
        dropped=dropped,
        sut_accepted=count("sut_in"),
        delivered=count("first_esp"),
        esp_accepted=esp_accepted,
        esp_replies=replies,
        esp_attempts=esp_accepted + count("t", "rec", rep),
        backlog=np.maximum(backlog, 0),
        reordered=reordered,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        queue_depth=depth,
    )


def _per_second_percentiles(con: Any, sec: str, length: int) -> tuple[np.ndarray, ...]:
    """Nearest-rank p50/p95/p99 of end-to-end latency (first acceptance - intended) per delivery second."""
    rows = con.execute(
        f"""WITH d AS (SELECT {sec} AS s, (first_esp - intended) / 1e6 AS lat
                       FROM msg WHERE first_esp != {NEVER}),
            r AS (SELECT s, lat, row_number() OVER (PARTITION BY s ORDER BY lat) AS i,
                         count(*) OVER (PARTITION BY s) AS n FROM d WHERE s IS NOT NULL)
            SELECT s, i, n, lat FROM r
            WHERE i IN (greatest(ceil(0.5 * n), 1), greatest(ceil(0.95 * n), 1),
                        greatest(ceil(0.99 * n), 1))"""
    ).fetchall()
    out = tuple(np.full(length, np.nan) for _ in range(3))
    for s, i, n, lat in rows:
        for arr, q in zip(out, (0.50, 0.95, 0.99), strict=True):
            if i == max(int(np.ceil(q * n)), 1):
                arr[s] = lat
    return out


def _nulls() -> str:
    return ", ".join(f'NULL::{typ} AS "{name}"' for name, typ in _COLUMNS.items())


def _quote(text: str) -> str:
    return text.replace("'", "''")
