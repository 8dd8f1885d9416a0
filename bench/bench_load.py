"""Load generator throughput: messages/s that Locust (mailstorm's SMTP user) submits per process.

    python bench/bench_load.py                 # full run, prints a Markdown table
    python bench/bench_load.py --smoke         # short runs, for CI: checks it all runs
    python bench/bench_load.py --write-docs    # also writes the table into docs/benchmarks.md

The server is Postfix's smtp-sink (C, ~33k msg/s here), on a free loopback port, so the generator is
the bottleneck. The load runs exactly as in a scenario: ``mailstorm.scenarios.launch.LoadRun`` starting
Locust in
its own processes, every submission written to the load ledger. Two workloads:

- closed: ``--users`` senders per process, no wait, ~2 KB messages, ``--per-conn`` messages per SMTP
  connection: the most the generator can push (messages accepted / s, from the ledger's start times);
- open: a target arrival rate of ``--target`` msg/s per process; the achieved rate and what was dropped
  (arrivals that could not start within max_lag_s), i.e. what the open model sustains with latency
  measured from the intended time.

Each is run with 1 standalone process and with master + 2 workers, ``--repeat`` times, best kept (the
machine may be shared; the best run is the least disturbed one).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docs_section import DOC, write_section  # noqa: E402  (bench/, beside this file)

from mailstorm.harness.targets.base import Endpoint  # noqa: E402
from mailstorm.ledger import Kind, LedgerReader  # noqa: E402
from mailstorm.ports import free_port, wait_for_port  # noqa: E402
from mailstorm.scenarios.launch import LoadRun  # noqa: E402
from mailstorm.scenarios.model import LoadSpec  # noqa: E402

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SECTION = "## Load generator: Locust SMTP user"


def measure(spec: LoadSpec, port: int) -> dict[str, float]:
    """Run one load against the sink; figures from the ledger (what was really submitted, when)."""
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        run = LoadRun(
            spec,
            [Endpoint("smtp", "127.0.0.1", port)],
            Path(tmp) / "ledger",
            run_id="b",
            seed=1,
            log_dir=Path(tmp) / "logs",
        )
        run.start()
        try:
            rc = run.wait(spec.duration_s + 120)
        finally:
            run.stop()
        if rc != 0:
            raise SystemExit(f"load exited with {rc}: {(Path(tmp) / 'logs').iterdir()}")
        reader = LedgerReader(Path(tmp) / "ledger")
        starts, ok = [], 0
        for r in reader.records([Kind.LOAD_SUBMIT]):
            starts.append(r["start"])
            ok += r["ok"]
        dropped = sum(r["count"] for r in reader.records([Kind.LOAD_DROPPED]))
    span = (max(starts) - min(starts)) / 1e9 if len(starts) > 1 else float("nan")
    return {"submitted": len(starts), "accepted": ok, "dropped": dropped, "rate": ok / span}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="short runs: check that everything runs")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--users", type=int, default=24, help="closed model: senders per process")
    p.add_argument("--target", type=float, default=5000.0, help="open model: msg/s per process")
    p.add_argument("--per-conn", type=int, default=1000, help="messages per SMTP connection")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--write-docs", action="store_true", help=f"write the table into {DOC.relative_to(ROOT)}")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.repeat, args.target, args.users = 2.0, 1, 500.0, 4
    if not Path(SMTP_SINK).exists():
        raise SystemExit("smtp-sink not found: apt-get install postfix")

    port = free_port()
    # -u: smtp-sink refuses to run as root without a user to switch to; 1024: listen backlog.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(
        [SMTP_SINK, *user, f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    rows = []
    try:
        wait_for_port("127.0.0.1", port, what="smtp-sink", alive=lambda: sink.poll() is None)
        for workers in (1, 2):
            base = {
                "duration_s": args.duration,
                "workers": workers,
                "msgs_per_connection": args.per_conn,
                "messages": [{"size": "2KiB"}],
                "timeout_s": 10,
            }
            closed = LoadSpec.model_validate(
                {**base, "shape": {"kind": "closed", "users": args.users * workers, "wait_s": 0}}
            )
            open_ = LoadSpec.model_validate(
                {
                    **base,
                    "shape": {"kind": "steady", "rate": args.target * workers},
                    "max_connections": args.users * workers,
                }
            )
            for name, spec in (("closed", closed), ("open", open_)):
                runs = [measure(spec, port) for _ in range(args.repeat)]
                best = max(runs, key=lambda r: r["rate"])
                rows.append((name, workers, spec, best, sorted(r["rate"] for r in runs)))
                print(
                    f"{name:6} workers={workers} best {best['rate']:,.0f} msg/s "
                    f"({best['rate'] / workers:,.0f} per process) dropped={best['dropped']}",
                    flush=True,
                )
    finally:
        sink.kill()
        sink.wait()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} cores "
        f"(shared with other work: load average {load} at the end), Python {platform.python_version()}; "
        "`python bench/bench_load.py"
        f"{' --smoke' if args.smoke else ''}`. Target: Postfix smtp-sink on loopback. ~2 KB messages, "
        f"{args.per_conn} per SMTP connection, {args.duration:g} s per run, best of {args.repeat}; "
        "every submission written to the load ledger and reported to Locust's stats.",
        "",
        "| workload | load processes | senders | target msg/s | accepted msg/s | per process | dropped |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, workers, spec, best, _ in rows:
        senders = spec.shape.users if spec.closed else spec.max_connections
        target = "-" if spec.closed else f"{spec.shape.rate:,.0f}"
        lines.append(
            f"| {name} | {workers} | {senders} | {target} | {best['rate']:,.0f} | "
            f"{best['rate'] / workers:,.0f} | {best['dropped']:,} |"
        )
    print("\n".join(lines))
    if args.write_docs:
        write_section(SECTION, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
