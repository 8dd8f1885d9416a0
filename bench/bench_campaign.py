"""Benchmark: campaigns. (1) The per-recipient analysis of a campaign of N recipients (default 1,000,000)
on synthetic ledgers (the ledgers read into the reports' Store, then the campaign's SQL), in a fresh
child process: time and peak memory, against the reports' goals, with the outcomes checked against the
synthetic truth. (2) The reference pipeline's fan-out rate (recipients
queued per second by POST /campaigns) beside its relay rate (messages the fake ESP accepted per second),
a real pipeline and a real fake ESP on loopback.

    python bench/bench_campaign.py            # 1,000,000 recipients; a 50,000-recipient campaign relayed
    python bench/bench_campaign.py --smoke    # 20,000 recipients; 2,000 relayed: a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from peak import peak_rss_mb  # noqa: E402  (bench/, beside this file)

GOAL_S = 15.0  # the reports' goals (bench_reports.py), for a campaign's part of them
GOAL_MB = 1024.0
CID = "bench"
NS = 1_000_000_000


def generate(run_dir: Path, n: int) -> dict[str, int]:
    """A campaign run directory: the list and the ledgers, with every outcome present; its truth."""
    from mailstorm.ledger import CampaignAnswer, CampaignList, CampaignTrigger, EspAccepted, encode_line

    (run_dir / "campaign").mkdir(parents=True)
    (run_dir / "ledger").mkdir()
    path = run_dir / "campaign" / f"{CID}.csv"
    truth = dict.fromkeys(
        ("delivered", "duplicated", "bounced", "missing", "suppressed_sent", "suppressed"), 0
    )
    t0 = 1_800_000_000 * NS
    with path.open("w") as lst, (run_dir / "ledger" / "esp-smtp-0.jsonl").open("wb") as esp:
        lst.write("email,name,status\n")
        for i in range(n):
            address = f"user.{i}@example.com"
            gone = i % 50 == 0  # 2% unsubscribed
            lst.write(f"{address},User {i},{'unsubscribed' if gone else 'subscribed'}\n")
            copies = 1
            if gone:
                copies = 1 if i % 5000 == 0 else 0
                truth["suppressed_sent" if copies else "suppressed"] += 1
            elif i % 9973 == 1:
                copies = 0
                truth["missing"] += 1
            elif i % 7919 == 1:
                copies = 2
                truth["duplicated"] += 1
            else:
                truth["delivered"] += 1
            for c in range(copies):
                rec = EspAccepted(
                    id=None, mid=f"m{i}.{c}", size=900, rcpts=1, sha="0" * 64, proto="smtp", api=None,
                    peer="127.0.0.1", session=str(i), key=None, acked=True, to=[address], campaign=CID,
                )  # fmt: skip
                esp.write(encode_line(rec, t=t0 + NS + i * 10_000 + c * NS, src="esp-smtp-0"))
        for j in range(10):  # acceptances for addresses that are not on the list
            rec = EspAccepted(
                id=None, mid=f"x{j}", size=900, rcpts=1, sha="0" * 64, proto="smtp", api=None,
                peer="127.0.0.1", session="x", key=None, acked=True, to=[f"stray.{j}@example.org"],
                campaign=CID,
            )  # fmt: skip
            esp.write(encode_line(rec, t=t0 + 2 * NS, src="esp-smtp-0"))
    with (run_dir / "ledger" / "timeline.jsonl").open("wb") as tl:
        listed = CampaignList(
            id=CID, path=str(path), url="", recipients=n, unsubscribed=n // 50 + (n % 50 > 0)
        )
        tl.write(encode_line(listed, t=t0, src="timeline"))
        tl.write(
            encode_line(CampaignTrigger(id=CID, via="http", request="POST", at_s=0.0), t=t0, src="timeline")
        )
        answer = CampaignAnswer(id=CID, via="http", ok=True, code=202, answer="", started=t0)
        tl.write(encode_line(answer, t=t0, src="timeline"))
    return {
        **truth,
        "unexpected": 10,
        "bytes": sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()),
    }


def measure(run_dir: Path) -> None:
    """In the child: reading the ledgers into the Store, then the per-recipient analysis; timings, peak
    RSS and the counts as JSON."""
    from mailstorm.reports.campaign import analyze
    from mailstorm.reports.store import open_run

    t, c = time.perf_counter(), time.process_time()
    with open_run(run_dir / "ledger") as store:
        opened = time.perf_counter() - t
        (campaign,) = analyze(run_dir, store, {}, 1_800_000_000 * NS, 0, [])
        figures = campaign.as_dict()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    peak_mb = peak_rss_mb()  # its own: bench/peak.py
    print(json.dumps({"s": wall, "cpu_s": cpu, "store_s": opened, "peak_mb": peak_mb,
                      "outcomes": figures["outcomes"], "unexpected": figures["unexpected"]}))  # fmt: skip


def analysis(n: int) -> tuple[list[tuple[str, str]], bool]:
    tmp = tempfile.mkdtemp(prefix="mailstorm-bench-campaign-")
    try:
        run_dir = Path(tmp) / "run"
        t = time.perf_counter()
        truth = generate(run_dir, n)
        gen_s = time.perf_counter() - t
        child = subprocess.run(
            [sys.executable, __file__, "--measure", str(run_dir)], capture_output=True, text=True, check=False
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            raise SystemExit(1)
        res = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    right = (
        res["outcomes"] == {k: truth[k] for k in res["outcomes"]} and res["unexpected"] == truth["unexpected"]
    )
    ok = right and res["s"] <= GOAL_S and res["peak_mb"] <= GOAL_MB
    return [
        ("recipients", f"{n:,} (synthetic ledgers {truth['bytes'] / 1e6:,.0f} MB, made in {gen_s:.1f} s)"),
        ("per-recipient analysis", f"{res['s']:.2f} s wall, {res['cpu_s']:.2f} s CPU"),
        ("  of which reading the ledgers (open_run)", f"{res['store_s']:.2f} s wall"),
        ("peak memory of the analysis process (max RSS)", f"{res['peak_mb']:,.0f} MB"),
        ("outcomes equal the synthetic truth", "yes" if right else f"NO: {res['outcomes']} vs {truth}"),
    ], ok


def pipeline(n: int) -> list[tuple[str, str]]:
    """A real reference pipeline fanning out a campaign of ``n`` into a real fake ESP."""
    from mailstorm.fake_esp.launch import EspProcess
    from mailstorm.harness.campaign import lists
    from mailstorm.harness.targets.base import TargetContext
    from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
    from mailstorm.ledger import Kind, LedgerReader

    tmp = Path(tempfile.mkdtemp(prefix="mailstorm-bench-fanout-"))
    try:
        lists.write(tmp / "list.csv", lists.generate(n, 0.0, seed=1))
        with EspProcess(tmp / "esp", log_path=tmp / "esp.log") as esp:
            target = ReferenceTarget(ReferenceTargetSpec())
            ctx = TargetContext(run_dir=tmp / "run", ledger_dir=tmp / "run" / "ledger", seed=1,
                                esp_smtp=(esp.smtp_host, esp.smtp_port))  # fmt: skip
            target.start(ctx)
            try:
                body = json.dumps({"campaign_id": CID, "list_path": str(tmp / "list.csv")}).encode()
                url = target.health_urls[0].replace("/health", "/campaigns")
                t = time.time_ns()
                urllib.request.urlopen(
                    urllib.request.Request(url, data=body, method="POST"), timeout=30
                ).close()
                deadline = time.monotonic() + 60 + n / 50
                while time.monotonic() < deadline:
                    count = sum(1 for _ in LedgerReader(tmp / "esp").records([Kind.ESP_ACCEPTED]))
                    if count >= n:
                        break
                    time.sleep(0.5)  # polling the ESP's ledger
            finally:
                target.stop()
        times = sorted(r["t"] for r in LedgerReader(tmp / "esp").records([Kind.ESP_ACCEPTED]))
        log = (tmp / "run" / "logs" / "reference-0.log").read_text()
        m = re.search(r"campaign \S+: (\d+) queued from row 0 in ([0-9.]+)s", log)
        fan_rate = int(m.group(1)) / float(m.group(2)) if m else float("nan")
        relay_rate = (len(times) - 1) / ((times[-1] - times[0]) / NS) if len(times) > 1 else float("nan")
        return [
            ("campaign relayed", f"{n:,} recipients, {len(times):,} accepted by the fake ESP"),
            ("fan-out rate (recipients queued / s)", f"{fan_rate:,.0f}"),
            ("relay rate (ESP acceptances / s)", f"{relay_rate:,.0f}"),
            ("trigger to the last acceptance", f"{(times[-1] - t) / NS:.1f} s" if times else "-"),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipients", type=int, default=1_000_000, help="of the analysis benchmark")
    parser.add_argument("--relayed", type=int, default=50_000, help="of the pipeline benchmark")
    parser.add_argument("--smoke", action="store_true", help="20,000 analysed, 2,000 relayed: a quick check")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's entry point
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return 0
    rows, ok = analysis(20_000 if args.smoke else args.recipients)
    rows += pipeline(2_000 if args.smoke else args.relayed)
    rows.append(("load average (1 min) after the run", f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if not args.smoke:
        print(f"analysis goal <= {GOAL_S:.0f} s and <= {GOAL_MB:.0f} MB: {'met' if ok else 'NOT met'}")
    return 0 if ok or not args.smoke else 1


if __name__ == "__main__":
    raise SystemExit(main())
