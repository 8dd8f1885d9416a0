"""Benchmark: three engines for the analysis's core over one synthetic ledger (default 1,000,000 messages).

The core is what grows with a run: reading the ledgers, the per-message join, the outcome counts (the
fate rules), exact e2e latency percentiles and the per-second series. Each engine computes it in a fresh
child process (so its peak RSS is its own) from the same ledger files:

- numpy: the reports' former path, kept as the tests' oracle (tests/reports/oracle.py: read_columns ->
  classify -> percentiles -> build_series, every record in memory);
- duckdb: the reports' path (reports/store.py: DuckDB reading the JSON Lines itself, memory_limit and 2
  threads; fate.MESSAGES_SQL, the percentiles and series.build_series over it);
- polars: Polars' streaming engine (scan_ndjson, the per-message group-by, then the same figures);
  Polars is no dependency of mailstorm: ``pip install polars`` to run this benchmark.

    python bench/bench_engines.py                   # 1,000,000 messages
    python bench/bench_engines.py --run RUN_DIR     # an existing run directory (bench_reports --keep)
    python bench/bench_engines.py --write-docs      # also write the figures into docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_section import write_section  # noqa: E402  (bench/, beside this file)
from peak import peak_rss_mb  # noqa: E402

ENGINES = ("numpy", "duckdb", "polars")
SECTION = "## Analysis engines: numpy, DuckDB, Polars over one ledger"


def run_numpy(run_dir: Path) -> dict:
    from tests.reports.oracle import build_series, classify, percentiles, read_columns, start_ns

    cols = read_columns(run_dir / "ledger")
    msgs = classify(cols)
    series = build_series(cols, msgs, start_ns(cols, msgs))
    return {"counts": msgs.counts(), "e2e": percentiles(msgs.e2e_ms()), "seconds": len(series)}


def run_duckdb(run_dir: Path) -> dict:
    from mailstorm.reports.analysis import E2E, outcome_counts
    from mailstorm.reports.series import build_series, start_ns
    from mailstorm.reports.store import open_run

    with open_run(run_dir / "ledger") as store:
        e2e = store.percentiles(*E2E, scale=1e6)
        e2e = {k: v if k == "count" or v is None else round(v, 3) for k, v in e2e.items()}
        series = build_series(store, start_ns(store))
        return {"counts": outcome_counts(store), "e2e": e2e, "seconds": len(series)}


def run_polars(run_dir: Path) -> dict:
    """The same core in Polars' streaming engine (the fate rules as expressions; no uncorrelated share:
    the synthetic pipeline keeps every id)."""
    import numpy as np
    import polars as pl

    from mailstorm.ledger import Kind, segments
    from mailstorm.reports import fate
    from tests.reports.oracle import percentiles

    schema = {
        "k": pl.String, "t": pl.Int64, "id": pl.String, "intended": pl.Int64, "start": pl.Int64,
        "end": pl.Int64, "ok": pl.Boolean, "code": pl.Int64, "phase": pl.String, "held": pl.Boolean,
        "campaign": pl.String,
    }  # fmt: skip
    files = [str(p) for p in segments(run_dir / "ledger")]
    k, t, never = pl.col("k"), pl.col("t"), fate.NEVER
    lf = pl.scan_ndjson(files, schema=schema, ignore_errors=True).filter(
        k.is_in(fate.SQL_KINDS) & pl.col("id").is_not_null()
    )
    end_t = pl.when(pl.col("end") > 0).then(pl.col("end")).otherwise(t)
    start_t = pl.when(pl.col("start") > 0).then(pl.col("start")).otherwise(end_t)
    intended_t = pl.when(pl.col("intended") > 0).then(pl.col("intended")).otherwise(start_t)
    sub, acc = k == Kind.LOAD_SUBMIT, k == Kind.ESP_ACCEPTED
    code = pl.col("code")
    per = (
        lf.group_by("id")
        .agg(
            intended=intended_t.filter(sub).min(),
            attempts=sub.sum(),
            ok_end=end_t.filter(sub & pl.col("ok")).min(),
            sut_acc=t.filter(k == Kind.SUT_ACCEPTED).min(),
            esp_count=acc.sum(),
            first_esp=t.filter(acc).min(),
            held_until=t.filter(k == Kind.ESP_DELIVERED).min(),
            held_at_esp=pl.col("held").filter(acc).any(),
            refused=((k == Kind.ESP_REPLIED) & (code >= 500) & (code < 600) | (k == Kind.SUT_BOUNCED)).any(),
            deferred=(k == Kind.SUT_DEFERRED).any(),
            relayed=((k == Kind.SUT_RELAYED) & (code >= 200) & (code < 300)).any(),
            held=(k == Kind.SUT_HELD).any(),
            stopped=(sub & (pl.col("phase") == "stop")).any(),
        )
        .filter(pl.col("attempts") > 0)
    )

    def bit(cond: pl.Expr, value: int) -> pl.Expr:
        return pl.when(cond).then(value).otherwise(0)

    state = (
        fate.SUBMITTED
        + bit(pl.col("ok_end").is_not_null() | pl.col("sut_acc").is_not_null(), fate.TOOK)
        + bit(pl.col("esp_count") >= 1, fate.ESP_ONCE)
        + bit(pl.col("esp_count") >= 2, fate.ESP_AGAIN)
        + bit(pl.col("held_at_esp").fill_null(False), fate.ESP_HELD)
        + bit(pl.col("held_until").is_not_null(), fate.ESP_OUT)
        + bit(pl.col("refused"), fate.REFUSED)
        + bit(pl.col("deferred"), fate.DEFERRED)
        + bit(pl.col("relayed"), fate.RELAYED)
        + bit(pl.col("held"), fate.HELD)
        + bit(pl.col("stopped"), fate.STOPPED)
    )
    table = pl.Series(fate.OUTCOME_OF, dtype=pl.Int8)
    delivered_at = (
        pl.when(pl.col("held_until").is_not_null())
        .then(pl.col("held_until"))
        .when(pl.col("held_at_esp").fill_null(False))
        .then(None)
        .otherwise(pl.col("first_esp"))
    )
    msg = per.select(
        outcome=state.map_batches(lambda s: table.gather(s), return_dtype=pl.Int8),
        intended=pl.col("intended"),
        first_esp=pl.col("first_esp").fill_null(never),
        e2e_ns=delivered_at - pl.col("intended"),
    ).collect(engine="streaming")
    per_outcome = dict(msg.group_by("outcome").len().iter_rows())
    counts = {"submitted": msg.height, **{n: int(per_outcome.get(i, 0)) for i, n in enumerate(fate.OUTCOMES)}}
    e2e = msg["e2e_ns"].drop_nulls().to_numpy() / 1e6
    t0 = int(msg["intended"].min())
    got = msg.filter(pl.col("first_esp") != never)
    series = (
        got.with_columns(
            s=(pl.col("first_esp") - t0) // 1_000_000_000,
            lat=(pl.col("first_esp") - pl.col("intended")) / 1e6,
        )
        .group_by("s")
        .agg(
            n=pl.len(), p50=pl.col("lat").quantile(0.5, "higher"), p99=pl.col("lat").quantile(0.99, "higher")
        )
        .sort("s")
    )
    offered = msg.group_by(((pl.col("intended") - t0) // 1_000_000_000).alias("s")).len()
    return {"counts": counts, "e2e": percentiles(np.sort(e2e)), "seconds": max(series.height, offered.height)}


def measure(engine: str, run_dir: Path) -> None:
    """In the child: one engine's core, timed; JSON on stdout."""
    t, c = time.perf_counter(), time.process_time()
    out = {"numpy": run_numpy, "duckdb": run_duckdb, "polars": run_polars}[engine](run_dir)
    out.update(
        wall_s=time.perf_counter() - t,
        cpu_s=time.process_time() - c,  # every thread of the process: DuckDB and Polars use two
        peak_mb=peak_rss_mb(),
    )
    print(json.dumps(out))


def child(engine: str, run_dir: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", engine, "--run", str(run_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{engine}: failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--run", type=Path, help="an existing run directory (else one is generated)")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--measure", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.run)
        return 0
    tmp = None
    run_dir = args.run
    if run_dir is None:
        from bench_reports import generate

        tmp = tempfile.TemporaryDirectory(prefix="mailstorm-bench-")
        run_dir = Path(tmp.name) / "run"
        generate(run_dir, args.messages)
    size = sum(p.stat().st_size for p in (run_dir / "ledger").iterdir())
    load = os.getloadavg()
    results = {engine: child(engine, run_dir) for engine in ENGINES}
    if tmp is not None:
        tmp.cleanup()
    base = results["numpy"]
    lines = [
        f"`python bench/bench_engines.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} at start): one synthetic run of "
        f"{base['counts']['submitted']:,} messages ({size / 1e6:,.0f} MB of JSON Lines, bench_reports' "
        "shape), "
        "each engine in a fresh process computing the core of the analysis: reading the ledgers, the "
        "per-message join, the outcome counts, exact e2e latency percentiles and the per-second series.",
        "",
        "| engine | wall | CPU (all threads) | peak RSS | vs numpy (wall) | outcomes = numpy's "
        "| p50 / p99 e2e ms |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for engine, r in results.items():
        same = "yes" if r["counts"] == base["counts"] else f"NO: {r['counts']}"
        lines.append(
            f"| {engine} | {r['wall_s']:.2f} s | {r['cpu_s']:.2f} s | {r['peak_mb']:,.0f} MB | "
            f"{base['wall_s'] / r['wall_s']:.1f}x | {same} | {r['e2e']['p50']} / {r['e2e']['p99']} |"
        )
    print("\n".join(lines))
    if args.write_docs:
        write_section(SECTION, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
