"""Benchmark: synthetic ledgers of N messages (default 1,000,000) -> every report; time and peak memory.

The run directory is generated first (a step-shaped load with an ESP outage, a relay that drains it, and
a handful of lost, duplicated, bounced, rejected and pending messages: every part of the analysis does
real work). The reports are then built in a fresh child process, so its peak RSS is the reports' alone.

    python bench/bench_reports.py            # 1,000,000 messages (about 3 million ledger records)
    python bench/bench_reports.py --smoke    # 20,000 messages, a few seconds
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

GOAL_S = 15.0
GOAL_MB = 1024.0


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
    return {"seconds": time.perf_counter() - t, "records": truth.records, "bytes": size,
            "submitted": truth.submitted}  # fmt: skip


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
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"analyze_s": t_analyze, "analyze_cpu_s": c_analyze, "build_s": t_build,
                      "build_cpu_s": c_build, "peak_mb": peak_mb, "outcomes": verdict.outcomes}))  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument(
        "--smoke", action="store_true", help="20,000 messages: a quick check that it all runs"
    )
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep it")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's entry point
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return 0
    messages = 20_000 if args.smoke else args.messages
    tmp = None
    if args.keep:
        run_dir = args.keep
    else:
        tmp = tempfile.mkdtemp(prefix="mailstorm-bench-")
        run_dir = Path(tmp) / "run"
    try:
        gen = generate(run_dir, messages)
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(run_dir)], capture_output=True, text=True, check=False
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            return 1
        res = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        ("messages", f"{gen['submitted']:,}"),
        ("ledger records", f"{gen['records']:,}"),
        ("ledger size", f"{gen['bytes'] / 1e6:,.0f} MB"),
        (
            "analysis only (ingest, outcomes, series, recovery, capacity)",
            f"{res['analyze_s']:.2f} s wall, {res['analyze_cpu_s']:.2f} s CPU",
        ),
        (
            "all reports (analysis + HTML with plots, Markdown, JSON, JUnit)",
            f"{res['build_s']:.2f} s wall, {res['build_cpu_s']:.2f} s CPU",
        ),
        ("peak memory of the reports process (max RSS)", f"{res['peak_mb']:,.0f} MB"),
    ]
    rows.append(("load average (1 min) after the run", f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    ok = res["build_s"] <= GOAL_S and res["peak_mb"] <= GOAL_MB
    if not args.smoke:
        print(f"goal <= {GOAL_S:.0f} s and <= {GOAL_MB:.0f} MB: {'met' if ok else 'NOT met'}")
    print(f"outcomes: {res['outcomes']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
