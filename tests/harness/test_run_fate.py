"""One fate for every message, live and in the reports, through real ``mailstorm run``s: the console's
last lines (the live counts) equal report.md's outcome table on a run with ESP retries and 5xx bounces
behind a SUT that keeps no ledger; and what the reference pipeline still holds when the drain ends is
pending (its queue listed into the ledger as sut.held), not lost, also in a report rebuilt from the
ledgers alone."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from mailstorm.ledger import Kind, LedgerReader
from mailstorm.reports.fate import Fates
from tests.harness.sut_support import ROOT, console_outcomes, report_md_outcomes, run_cli, without_load
from tests.reports.fate_forms import sql_counts

# The reference pipeline run as a plain process whose own ledger is kept out of the run's: to the run it
# is a SUT without a ledger, so only the ESP's records say what became of a message after the SUT took it.
RETRIES_AND_5XX = """\
name: fate-retries-5xx
seed: 3
duration: 6s
drain_deadline: 30s
target:
  kind: process
  command: ["{python}", -m, mailstorm.harness.reference, --listen, "{host}:{port}",
            --queue, "{run_dir}/queue.sqlite", --relay, "smtp://{esp_host}:{esp_port}",
            --ledger, "{run_dir}/sut-own-ledger", --seed, "{seed}",
            --backoff-base, "0.1", --backoff-max, "0.5"]
  cwd: "{mailstorm_root}"
esp:
  faults:
    - {type: reply, phase: eod, reply: "451 4.3.0 Try again later", probability: 0.3}
    - {type: reply, phase: eod, reply: "550 5.1.1 No such user", probability: 0.05}
load:
  shape: {kind: steady, rate: 25}
slo:
  max_lost: 0
"""

# The ESP hangs from 2 s to the end; the pipeline waits on it far longer than the drain deadline, so no
# sut.deferred is written for what it holds.
HANG = """\
name: fate-reference-hang
seed: 4
duration: 6s
drain_deadline: 3s
target: {kind: reference, relay_timeout_s: 120, stop_timeout_s: 3}
load:
  shape: {kind: steady, rate: 20}
chaos:
  - {at: 2s, for: 4s, name: esp-hang, esp_outage: {mode: hang}}
slo:
  max_lost: 0
"""


def batch_and_live(run_dir: Path) -> tuple[dict[str, int], dict[str, int]]:
    """Both forms of the fate module over a finished run's ledgers."""
    ledger = run_dir / "ledger"
    fates = Fates()
    fates.feed_all(LedgerReader(ledger).records())
    return sql_counts(ledger), fates.counts()


def test_live_summary_equals_report_md_with_retries_and_esp_5xx(tmp_path):
    """ESP 451s the SUT retries through and 550s it cannot: the drain ends as soon as every message is
    delivered or bounced (an ESP 5xx settles a message, also behind a SUT without a ledger), and the
    console's last lines are report.md's outcome table, number for number."""
    path = tmp_path / "retries.yaml"
    path.write_text(RETRIES_AND_5XX)
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    assert "completed: drained" in err, err
    live = console_outcomes(err)
    assert (
        live == report_md_outcomes(run_dir)
        and without_load(live) == json.loads((run_dir / "report.json").read_text())["outcomes"]
    )
    assert live["bounced"] > 0 and live["delivered"] > 0 and live["lost"] == 0
    assert live["delivered"] + live["bounced"] == live["submitted"] == 150
    replies = [r["code"] for r in LedgerReader(run_dir / "ledger").records([Kind.ESP_REPLIED])]
    assert replies.count(451) > 0 and replies.count(550) == live["bounced"]
    assert not list(LedgerReader(run_dir / "ledger").records([Kind.SUT_BOUNCED, Kind.SUT_DEFERRED]))
    batch, incremental = batch_and_live(run_dir)
    assert batch == incremental == without_load(live)


def test_reference_pipeline_behind_a_hanging_esp_ends_with_its_queue_pending(tmp_path):
    """The pipeline still holds, unrelayed and never deferred, everything it took once the ESP hung: at the
    end of the drain its SQLite queue is listed into the ledger (sut.held), those messages are pending,
    none is lost, and the console, report.md and a report rebuilt from the ledgers alone agree."""
    path = tmp_path / "hang.yaml"
    path.write_text(HANG)
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    reader = LedgerReader(run_dir / "ledger")
    held = {r["id"]: r["queue_id"] for r in reader.records([Kind.SUT_HELD])}
    with sqlite3.connect(run_dir / "reference" / "queue-0.sqlite") as db:
        queued = {corr: f"queue-0:{row}" for row, corr in db.execute("SELECT id, corr FROM queue")}
    assert held == queued and len(held) >= 40, (len(held), len(queued))
    at_esp = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])}
    deferred = {r["id"] for r in reader.records([Kind.SUT_DEFERRED])}
    assert not held.keys() & deferred, "the pipeline deferred what was meant to be waiting on the ESP"
    live = console_outcomes(err)
    assert live == report_md_outcomes(run_dir)
    assert live["lost"] == 0 and live["pending"] == len(held.keys() - at_esp) > 0
    assert f"the SUT still held {len(held)} at the end of the drain" in err
    for name in ("report.md", "report.json"):
        (run_dir / name).unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "report", str(run_dir), "--format", "md,json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (
        report_md_outcomes(run_dir) == live
        and without_load(live) == json.loads((run_dir / "report.json").read_text())["outcomes"]
    )
    assert batch_and_live(run_dir) == (without_load(live), without_load(live))
