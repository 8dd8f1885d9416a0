"""Benchmark: synthetic ledgers of N messages -> every report; time and peak memory, at every size, and
the reports' former path beside them in the same run.

The run directory is generated first (a step-shaped load with an ESP outage, a relay that drains it, and
a handful of lost, duplicated, bounced, rejected and pending messages: every part of the analysis does
real work). Each measurement then runs in a fresh child process, so its peak RSS is its own (its memory
map's high-water mark, VmHWM: not ``ru_maxrss``, which a child inherits from the parent that wrote the
ledger; bench/peak.py):

- the reports' path (reports/store.py: DuckDB, out of core): ``analyze`` and ``build`` (every report)
  at every size; its slope between the sizes extrapolates to 86 M messages (a day at 1,000 msg/s);
- with ``--baseline REV``, the same two calls of the code at git revision REV (the numpy path held
  every record in memory until the port: ``--baseline 2dcdf11``), at the first size, in the same run:
  the revision is checked out into a temporary worktree and imported in place of this one.

    python bench/bench_reports.py --baseline 2dcdf11    # 1,000,000 and 10,000,000 messages
    python bench/bench_reports.py --write-docs ...      # and write the figures into docs/benchmarks.md
    python bench/bench_reports.py --smoke               # 20,000 messages, a few seconds (CI)
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
BASELINE_ENV = "MAILSTORM_BENCH_CODE"  # the baseline child's package directory, imported before all else
if os.environ.get(BASELINE_ENV):
    sys.path.insert(0, os.environ[BASELINE_ENV])
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docs_section import write_section  # noqa: E402  (bench/, beside this file)
from peak import peak_rss_mb  # noqa: E402

GOAL_SPEEDUP = 5.0  # the analysis vs the numpy path's (--baseline), same run, 1 M messages
GOAL_10M_S = 60.0
GOAL_FLAT = 1.5  # peak RSS at 10 M / at 1 M
DAY = 86_000_000
SECTION = "## Reports at scale: 1 M and 10 M messages in flat memory"  # the heading in docs/benchmarks.md


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


def child(run_dir: Path, code: Path | None = None) -> dict:
    """``measure`` in a fresh process; ``code``: a directory whose ``mailstorm`` package it imports
    instead of this checkout's (the baseline)."""
    env = {k: v for k, v in os.environ.items() if k != BASELINE_ENV}
    if code is not None:
        env[BASELINE_ENV] = str(code)  # ahead of this checkout and of the editable install's finder
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", str(run_dir)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"bench_reports: the measuring child failed ({'baseline' if code else 'this tree'})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def baseline(rev: str, into: Path) -> Path:
    """A directory importable as the ``mailstorm`` package of git revision ``rev``: its tree checked out,
    with the top-level folders the package maps (setup.py's package_dir) linked in as subpackages."""
    tree = into / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                   capture_output=True)  # fmt: skip
    pkg = into / "site" / "mailstorm"
    pkg.mkdir(parents=True)
    for entry in (tree / "mailstorm").iterdir():
        (pkg / entry.name).symlink_to(entry)
    for sub in ("harness", "fake_esp", "scenarios", "reports"):
        (pkg / sub).symlink_to(tree / sub)
    return into / "site"


def at_size(messages: int, keep: Path | None, old: Path | None) -> dict:
    """Generate a run of ``messages``, measure this tree's reports (and the baseline's when given)."""
    tmp = None
    if keep:
        run_dir = keep / f"run-{messages}"
    else:
        tmp = tempfile.mkdtemp(prefix="mailstorm-bench-")
        run_dir = Path(tmp) / "run"
    try:
        out = {"gen": generate(run_dir, messages), "now": child(run_dir)}
        if old is not None:
            out["old"] = child(run_dir, old)
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
    parser.add_argument(
        "--baseline", metavar="REV", help="also measure git revision REV's reports (first size)"
    )
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the children's entry point
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return 0
    sizes = [20_000] if args.smoke else sorted(args.messages)
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="mailstorm-bench-old-"))
    try:
        old = baseline(args.baseline, work) if args.baseline else None
        runs = {n: at_size(n, args.keep, old if i == 0 else None) for i, n in enumerate(sizes)}
    finally:
        if args.baseline:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "tree")],
                           check=False, capture_output=True)  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    first = runs[sizes[0]]
    base = first["now"]
    lines = [
        f"`python bench/bench_reports.py{' --baseline ' + args.baseline if args.baseline else ''}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{os.cpu_count()} CPUs shared with other sessions, load average {load[0]:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at the end): bench_reports' synthetic runs (a 10-step load, a 30 s ESP "
        "outage and its drain, 7 lost, 5 duplicated, 3 bounced, 11 rejected, 2 pending), each measurement "
        "in a fresh process (peak RSS = its own high-water mark, VmHWM). The reports' path "
        "(reports/store.py: DuckDB, memory_limit 512 MB, 2 threads) and, with --baseline, the same calls of "
        "an earlier revision (the numpy path, every record in memory) on the same ledger in the same run.",
        "",
        "| messages | ledger | path | analysis (wall / CPU) | every report (wall / CPU) | peak RSS "
        "| outcomes |",
        "|---:|---:|---|---:|---:|---:|---|",
    ]

    def row(n: int, gen: dict, m: dict, path: str) -> str:
        outcomes = "exact" if _exact(m["outcomes"], gen) else m["outcomes"]
        return (
            f"| {n:,} | {gen['bytes'] / 1e6:,.0f} MB | {path} | "
            f"{m['analyze_s']:.2f} s / {m['analyze_cpu_s']:.2f} s | "
            f"{m['build_s']:.2f} s / {m['build_cpu_s']:.2f} s | {m['peak_mb']:,.0f} MB | {outcomes} |"
        )

    if "old" in first:
        lines.append(row(sizes[0], first["gen"], first["old"], f"{args.baseline} (numpy)"))
    lines += [row(n, r["gen"], r["now"], "this tree (DuckDB)") for n, r in runs.items()]
    made = ", ".join(
        f"{n:,} messages in {r['gen']['seconds']:.0f} s (peak RSS {r['gen']['peak_mb']:,.0f} MB)"
        for n, r in runs.items()
    )
    lines += ["", f"- Ledger generation: {made}."]
    if "old" in first:
        old_m = first["old"]
        speedup = old_m["analyze_s"] / base["analyze_s"]
        met = "met" if speedup >= GOAL_SPEEDUP else "NOT met"
        lines.append(
            f"- {sizes[0]:,} messages: the analysis {speedup:.1f}x faster than {args.baseline}'s in wall "
            f"time ({old_m['analyze_cpu_s'] / base['analyze_cpu_s']:.1f}x in CPU; every report "
            f"{old_m['build_s'] / base['build_s']:.1f}x; peak RSS {base['peak_mb'] / old_m['peak_mb']:.2f}x; "
            f"goal >= {GOAL_SPEEDUP:.0f}x: {met}); the same outcomes: "
            f"{old_m['outcomes'] == base['outcomes']}."
        )
    if len(sizes) > 1:
        hi, lo = runs[sizes[-1]]["now"], base
        total = hi["build_s"]  # every report: build analyses the run itself, then renders
        slope = (total - lo["build_s"]) / (sizes[-1] - sizes[0])
        cpu_hi, cpu_lo = hi["build_cpu_s"], lo["build_cpu_s"]
        cpu_slope = (cpu_hi - cpu_lo) / (sizes[-1] - sizes[0])
        flat = hi["peak_mb"] / lo["peak_mb"]
        lines += [
            f"- {sizes[-1]:,} messages, every report: {total:.1f} s (goal <= {GOAL_10M_S:.0f} s: "
            f"{'met' if total <= GOAL_10M_S else 'NOT met'}); peak RSS {flat:.2f}x that at {sizes[0]:,} "
            f"(goal <= {GOAL_FLAT}x: {'met' if flat <= GOAL_FLAT else 'NOT met'}).",
            f"- Extrapolated from the slope ({slope * 1e6:.2f} s wall, {cpu_slope * 1e6:.2f} s CPU per "
            f"million messages): {DAY:,} messages (a day at 1,000 msg/s) in "
            f"~{total + slope * (DAY - sizes[-1]):,.0f} s wall, "
            f"~{cpu_hi + cpu_slope * (DAY - sizes[-1]):,.0f} s CPU.",
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
