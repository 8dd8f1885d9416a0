"""The runner's live /metrics: its extra CPU at 1,000 msg/s, with and without (one run each).

    python bench/bench_metrics.py                # 1,000 msg/s for 20 s, prints a Markdown table
    python bench/bench_metrics.py --smoke        # 200 msg/s for 3 s, for CI: checks it all runs
    python bench/bench_metrics.py --write-docs   # also writes the table into docs/benchmarks.md

Two runs of the same scenario (the reference pipeline, a steady load, no fault) in this process, as
``mailstorm run`` does them (``mailstorm.harness.run.Run``): one without the metrics server, one with it
and scraped every second by another process (as Prometheus would: the scraper's own CPU is not the
runner's). The figure is the runner process's CPU (all its threads: ledger tail, live counts, progress,
the metrics server; the ESP, the pipeline and Locust are other processes) from the start of the load
phase to the end of the drain, the reports left out.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docs_section import write_section  # noqa: E402  (bench/, beside this file)
from prometheus_client import generate_latest  # noqa: E402

from mailstorm.harness.metrics import RunnerMetrics  # noqa: E402
from mailstorm.harness.run import Run  # noqa: E402
from mailstorm.harness.scenario import load_scenario_text  # noqa: E402

SECTION = "## Runner: live /metrics"
SCRAPE_S = 1.0
SCRAPE_REPEAT = 200

SCENARIO = """\
name: bench-metrics
seed: 1
duration: {duration}s
drain_deadline: 30s
target: {{kind: reference, instances: 2}}
load:
  shape: {{kind: steady, rate: {rate}}}
  max_connections: 200
  workers: 2
reports: {{formats: [json]}}
"""

# Scrapes the run's /metrics every SCRAPE_S once run.json names it, until the run is done.
SCRAPER = """
import json, sys, time, urllib.request
from pathlib import Path
out, every = Path(sys.argv[1]), float(sys.argv[2])
scrapes = 0
while True:
    infos = [json.loads(p.read_text() or "{}") for p in out.glob("*/run.json")]
    info = infos[0] if infos else {}
    if info.get("status") == "done":
        break
    if "metrics" in info:
        try:
            urllib.request.urlopen(f"http://{info['metrics']}/metrics", timeout=2).read()
            scrapes += 1
        except OSError:
            pass
    time.sleep(every)
print(scrapes)
"""


def measure(rate: int, duration: float, *, metrics: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        out = Path(tmp)
        run = Run(load_scenario_text(SCENARIO.format(rate=rate, duration=duration)), out=out, progress=False,
                  metrics=metrics)  # fmt: skip
        cpu: dict[str, float] = {}
        load_phase, report = run._load_phase, run._report

        def timed_load(progress):
            cpu["start"] = time.process_time()
            return load_phase(progress)

        def timed_report(*, complete):
            cpu["end"] = time.process_time()
            return report(complete=complete)

        run._load_phase, run._report = timed_load, timed_report
        scraper = None
        if metrics:
            argv = [sys.executable, "-c", SCRAPER, str(out), str(SCRAPE_S)]
            scraper = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
            run._descendants.spare(scraper.pid)  # the bench's, not the run's: not to be ended with it
        try:
            code = run.execute()
        finally:
            scrapes = int(scraper.communicate(timeout=30)[0] or 0) if scraper is not None else 0
        s = run.stats
        # One scrape's CPU on the run's final counts (the latency window's deliveries made recent again,
        # so the p95 sorts a full window): the collector and the text, without HTTP.
        s._latencies = deque((time.time(), ms) for _, ms in s._latencies)
        registry = RunnerMetrics(s).registry
        t = time.process_time()
        for _ in range(SCRAPE_REPEAT):
            generate_latest(registry)
        scrape_ms = 1000 * (time.process_time() - t) / SCRAPE_REPEAT
        return {
            "scrape_ms": scrape_ms,
            "code": code,
            "cpu_s": cpu["end"] - cpu["start"],
            "offered": s.offered,
            "delivered": s.delivered,
            "scrapes": scrapes,
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="200 msg/s for 3 s (CI: checks it runs)")
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    rate, duration = (200, 3.0) if args.smoke else (args.rate, args.duration)
    without = measure(rate, duration, metrics=False)
    with_ = measure(rate, duration, metrics=True)
    for name, r in (("without", without), ("with", with_)):
        figures = f"offered {r['offered']:,}, delivered {r['delivered']:,}, scrapes {r['scrapes']}"
        print(f"{name:7} /metrics: runner CPU {r['cpu_s']:.2f} s, {figures}, exit {r['code']}", flush=True)
    if with_["scrapes"] == 0:
        print("bench_metrics: the metrics were never scraped", file=sys.stderr)
        return 1
    ratio = with_["cpu_s"] / without["cpu_s"] if without["cpu_s"] else float("nan")
    per = [r["cpu_s"] / r["offered"] if r["offered"] else float("nan") for r in (with_, without)]
    per_msg = per[0] / per[1]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other work: load average {load} at the end), Python {platform.python_version()}; "
        f"`python bench/bench_metrics.py{' --smoke' if args.smoke else ''}`. The reference pipeline "
        "(2 instances, 2 load workers) at "
        f"{rate:,} msg/s for {duration:g} s, one run without the runner's /metrics and one with it scraped "
        f"every {SCRAPE_S:g} s by another process; the runner process's CPU from the load's start to the "
        "drain's end (all its threads; the ESP, the pipeline and Locust are other processes).",
        "",
        "| /metrics | runner CPU (s) | offered | delivered | CPU per 1,000 offered (ms) | scrapes |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {r['cpu_s']:.2f} | {r['offered']:,} | {r['delivered']:,} | "
            f"{1e6 * r['cpu_s'] / max(r['offered'], 1):.1f} | {r['scrapes']} |"
            for name, r in (("off", without), ("on", with_))
        ),
        "",
        f"Ratio with/without: **{ratio:.3f}** of the runner's CPU, **{per_msg:.3f}** per message offered "
        "(one run each: the runs' own noise included; scrapes over the whole run, start and stop included). "
        f"One scrape on the run's final counts ({with_['delivered']:,} messages; "
        "the last 10 s of deliveries in the p95) "
        f"costs {with_['scrape_ms']:.2f} ms of CPU (mean of {SCRAPE_REPEAT}, without HTTP): "
        f"{with_['scrape_ms'] / 10 / SCRAPE_S:.2f}% of one core at a scrape a second.",
    ]
    reached = [r["offered"] / duration for r in (without, with_)]
    if min(reached) < 0.9 * rate:
        lines.append(
            f"The load reached {reached[0]:,.0f} and {reached[1]:,.0f} msg/s of the {rate:,} planned "
            "(the rest "
            "dropped by the load generator: the machine could not carry more), hence the per-message figure."
        )
    print("\n".join(lines))
    if args.write_docs:
        write_section(SECTION, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
