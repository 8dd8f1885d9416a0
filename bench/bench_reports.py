"""Benchmark: synthetic ledgers of N messages -> every report; time and peak memory, two paths.

The run directory is generated first (a step-shaped load with an ESP outage, a relay that drains it, and
a handful of lost, duplicated, bounced, rejected and pending messages: every part of the analysis does
real work). Each measurement then runs in a fresh child process, so its peak RSS is its own (its memory
map's high-water mark, VmHWM: not ``ru_maxrss``, which a child inherits from the parent that wrote the
ledger; bench/peak.py):

- today's path (numpy): ``analyze`` and ``build`` (every report) at the first size;
- the out-of-core engine (reports/engine.py, DuckDB): outcomes, exact latency percentiles and the
  per-second series, at every size; its slope between the sizes extrapolates to 86 M messages (a day at
  1,000 msg/s).

    python bench/bench_reports.py                 # 1,000,000 and 10,000,000 messages
    python bench/bench_reports.py --write-docs    # and write the figures into docs/benchmarks.md
    python bench/bench_reports.py --smoke         # 20,000 messages, a few seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_section import write_section  # noqa: E402  (bench/, beside this file)
from peak import peak_rss_mb  # noqa: E402

GOAL_S = 15.0  # today's path, every report at 1 M messages
GOAL_MB = 1024.0
GOAL_SPEEDUP = 5.0  # the engine vs today's analysis, same run, 1 M messages
GOAL_10M_S = 60.0
GOAL_FLAT = 1.5  # peak RSS at 10 M / at 1 M
DAY = 86_000_000
SECTION = "## Reports at scale: today's path and the out-of-core engine"


def generate(run_dir: Path, messages: int) -> dict:
    from mailstorm.reports.spec import SloSpec
    from mailstorm.reports.synthetic import synthesize

    steps, step_s = 10, 100
    base = messages / (steps * step_s)  # mean rate so that the steps add up to `messages`
    levels = base * np.linspace(0.55, 1.45, steps)
    rates = np.repeat(levels, step_s)
    rates *= messages / rates.sum()
    shape = {"kind": "step", "start_rate": float(levels[0]), "step_rate": float(levels[1] - levels[0]),
             "step_s": step_s, "steps": steps}  # fmt: skip
    t = time.perf_counter()
    truth = synthesize(
        run_dir,
        rates=rates,
        capacity=float(levels.max() * 2),
        outage=(400.0, 430.0),
        lost=7,
        duplicated=5,
        bounced=3,
        rejected=11,
        pending=2,
        shape=shape,
        slo=SloSpec(p99_e2e_ms=60_000, max_recovery_s=120),
        bulk=True,
    )
    size = sum(p.stat().st_size for p in (run_dir / "ledger").iterdir())
    # This process's peak so far: the sizes run in increasing order, so it is the generator's at this size.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": time.perf_counter() - t, "records": truth.records, "bytes": size,
            "submitted": truth.submitted, "peak_mb": peak}  # fmt: skip


def measure_engine(run_dir: Path) -> None:
    """In the child: the engine's outcomes, latency and series; timings and peak RSS as JSON."""
    from mailstorm.reports.engine import core

    t, c = time.perf_counter(), time.process_time()
    got = core(run_dir)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak_mb = peak_rss_mb()
    print(json.dumps({"core_s": wall, "core_cpu_s": cpu, "peak_mb": peak_mb, "outcomes": got.counts}))


def measure(run_dir: Path) -> None:
    """In the child: build every report and print the timings and peak RSS as JSON."""
    from mailstorm.reports.analysis import analyze
    from mailstorm.reports.builder import build

    # Wall time is what a user waits; CPU time says how much of it was ours on a shared machine.
    t, c = time.perf_counter(), time.process_time()
    analyze(run_dir)
    t_analyze, c_analyze = time.perf_counter() - t, time.process_time() - c
    t, c = time.perf_counter(), time.process_time()
    verdict = build(run_dir)
    t_build, c_build = time.perf_counter() - t, time.process_time() - c
    peak_mb = peak_rss_mb()  # its own: bench/peak.py
    print(json.dumps({"analyze_s": t_analyze, "analyze_cpu_s": c_analyze, "build_s": t_build,
                      "build_cpu_s": c_build, "peak_mb": peak_mb, "outcomes": verdict.outcomes}))  # fmt: skip


def child(run_dir: Path, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, mode, str(run_dir)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"bench_reports: the {mode} child failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def at_size(messages: int, keep: Path | None, today: bool) -> dict:
    """Generate a run of ``messages``, measure the engine (and today's path when asked), clean up."""
    tmp = None
    if keep:
        run_dir = keep / f"run-{messages}"
    else:
        tmp = tempfile.mkdtemp(prefix="mailstorm-bench-")
        run_dir = Path(tmp) / "run"
    try:
        out = {"gen": generate(run_dir, messages), "engine": child(run_dir, "--measure-engine")}
        if today:
            out["today"] = child(run_dir, "--measure")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--smoke", action="store_true", help="20,000 messages: a quick check that it all runs"
    )
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep the runs")
    parser.add_argument("--write-docs", action="store_true", help="write the figures into docs/benchmarks.md")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the children's entry points
    parser.add_argument("--measure-engine", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return 0
    if args.measure_engine:
        measure_engine(args.measure_engine)
        return 0
    sizes = [20_000] if args.smoke else sorted(args.messages)
    load = os.getloadavg()
    runs = {n: at_size(n, args.keep, today=i == 0) for i, n in enumerate(sizes)}
    first = runs[sizes[0]]
    today, base = first["today"], first["engine"]
    lines = [
        f"`python bench/bench_reports.py` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs shared with other sessions, load average {load[0]:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at the end): bench_reports' synthetic runs (a 10-step load, a 30 s ESP "
        "outage and its drain, 7 lost, 5 duplicated, 3 bounced, 11 rejected, 2 pending), each measurement "
        "in a fresh process (peak RSS = its own high-water mark, VmHWM). The engine (reports/engine.py: "
        "DuckDB, memory_limit 512 MB, 2 threads) computes outcomes, exact latency percentiles and the "
        "per-second series; today's path (numpy) the whole analysis, then every report.",
        "",
        "| messages | ledger | path | what | wall | CPU | peak RSS | outcomes |",
        "|---:|---:|---|---|---:|---:|---:|---|",
    ]
    same = "= today's" if base["outcomes"] == today["outcomes"] else f"DIFFER: {base['outcomes']}"
    n0 = f"{sizes[0]:,}"
    size0 = f"{first['gen']['bytes'] / 1e6:,.0f} MB"
    lines += [
        f"| {n0} | {size0} | today (numpy) | analysis | {today['analyze_s']:.2f} s | "
        f"{today['analyze_cpu_s']:.2f} s | | |",
        f"| {n0} | {size0} | today (numpy) | every report | {today['build_s']:.2f} s | "
        f"{today['build_cpu_s']:.2f} s | {today['peak_mb']:,.0f} MB | "
        f"{'exact' if _exact(today['outcomes'], first['gen']) else today['outcomes']} |",
    ]
    for n, run in runs.items():
        e = run["engine"]
        outcomes = same if n == sizes[0] else "exact" if _exact(e["outcomes"], run["gen"]) else e["outcomes"]
        lines.append(
            f"| {n:,} | {run['gen']['bytes'] / 1e6:,.0f} MB | engine (DuckDB) | outcomes, latency, series | "
            f"{e['core_s']:.2f} s | {e['core_cpu_s']:.2f} s | {e['peak_mb']:,.0f} MB | {outcomes} |"
        )
    speedup = today["analyze_s"] / base["core_s"]
    made = ", ".join(
        f"{n:,} messages in {r['gen']['seconds']:.0f} s (peak RSS {r['gen']['peak_mb']:,.0f} MB)"
        for n, r in runs.items()
    )
    lines += ["", f"- Ledger generation: {made}."]
    lines.append(
        f"- {n0} messages: the engine {speedup:.1f}x faster than today's analysis in wall time "
        f"({today['analyze_cpu_s'] / base['core_cpu_s']:.1f}x in CPU; goal >= {GOAL_SPEEDUP:.0f}x: "
        f"{'met' if speedup >= GOAL_SPEEDUP else 'NOT met'})."
    )
    if len(sizes) > 1:
        hi, lo = runs[sizes[-1]]["engine"], base
        slope = (hi["core_s"] - lo["core_s"]) / (sizes[-1] - sizes[0])
        cpu_slope = (hi["core_cpu_s"] - lo["core_cpu_s"]) / (sizes[-1] - sizes[0])
        flat = hi["peak_mb"] / lo["peak_mb"]
        lines += [
            f"- {sizes[-1]:,} messages: {hi['core_s']:.1f} s (goal <= {GOAL_10M_S:.0f} s: "
            f"{'met' if hi['core_s'] <= GOAL_10M_S else 'NOT met'}); peak RSS {flat:.2f}x that at {n0} "
            f"(goal <= {GOAL_FLAT}x: {'met' if flat <= GOAL_FLAT else 'NOT met'}).",
            f"- Extrapolated from the slope ({slope * 1e6:.2f} s wall, {cpu_slope * 1e6:.2f} s CPU per "
            f"million messages): {DAY:,} messages (a day at 1,000 msg/s) in "
            f"~{hi['core_s'] + slope * (DAY - sizes[-1]):,.0f} s wall, "
            f"~{hi['core_cpu_s'] + cpu_slope * (DAY - sizes[-1]):,.0f} s CPU.",
        ]
    print("\n".join(lines))
    if args.write_docs and not args.smoke:
        write_section(SECTION, lines)
    return 0


def _exact(outcomes: dict, gen: dict) -> bool:
    return outcomes["submitted"] == gen["submitted"] and (
        outcomes["lost"],
        outcomes["duplicated"],
        outcomes["bounced"],
        outcomes["rejected"],
        outcomes["pending"],
    ) == (7, 5, 3, 11, 2)


if __name__ == "__main__":
    raise SystemExit(main())
