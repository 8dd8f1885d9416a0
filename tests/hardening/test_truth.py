"""Truth against a known-broken pipeline: a full ``mailstorm run`` (the CLI, as a user runs it) against
tests/hardening/broken_sut.py as a ``process`` target, which drops 4 chosen messages, relays 3 others
twice and holds 2 past the deadline. report.json must count exactly 4 lost, 3 duplicated, 2 pending and
the rest delivered, the ledgers must show it was those very messages, and the run must fail its SLOs
(exit 1). Then damaged copies of that run directory: `mailstorm report` rebuilds or refuses in one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mailstorm.ledger import Kind, LedgerReader
from tests.hardening.support import ROOT
from tests.harness.sut_support import console_outcomes, report_md_outcomes, run_cli, without_load

DROP, DUP, HOLD = (3, 17, 42, 64), (5, 30, 71), (10, 55)
RATE, SECONDS = 20, 4

SCENARIO = f"""
name: broken-pipeline
seed: 9
duration: {SECONDS}s
drain_deadline: 3s
target:
  kind: process
  command: ["{{python}}", -m, tests.hardening.broken_sut, --listen, "{{host}}:{{port}}",
            --relay, "{{esp_host}}:{{esp_port}}", --ledger, "{{ledger_dir}}",
            --drop, "{",".join(map(str, DROP))}", --dup, "{",".join(map(str, DUP))}",
            --hold, "{",".join(map(str, HOLD))}"]
  cwd: "{{mailstorm_root}}"
load:
  shape: {{kind: steady, rate: {RATE}}}
slo:
  max_lost: 0
  max_duplicated: 0
"""


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    """One `mailstorm run` against the broken pipeline: exit code, run directory, stderr."""
    tmp = tmp_path_factory.mktemp("truth")
    path = tmp / "broken.yaml"
    path.write_text(SCENARIO)
    return run_cli(path, tmp / "runs", timeout=180)


def test_a_run_against_a_known_broken_pipeline_reports_exactly_its_faults(broken_run):
    """Exactly the dropped, duplicated and held messages are counted lost, duplicated and pending; the
    verdict fails with exit code 1; the console's closing outcome table (the live counts) says the same."""
    code, run_dir, err = broken_run
    assert code == 1, err
    report = json.loads((run_dir / "report.json").read_text())
    submitted = RATE * SECONDS
    assert report["outcomes"] == {
        "submitted": submitted,
        "delivered": submitted - len(DROP) - len(DUP) - len(HOLD),
        "duplicated": len(DUP),
        "bounced": 0,
        "pending": len(HOLD),
        "lost": len(DROP),
        "rejected": 0,
        "uncorrelated": 0,
    }
    assert report["verdict"] == "fail"
    assert console_outcomes(err) == report_md_outcomes(run_dir)
    assert without_load(console_outcomes(err)) == report["outcomes"]
    judged = {s["name"]: (s["actual"], s["passed"]) for s in report["slo"]}
    assert judged["max_lost"] == (len(DROP), False) and judged["max_duplicated"] == (len(DUP), False)

    reader = LedgerReader(run_dir / "ledger")
    by_arrival = {r["queue_id"]: r["id"] for r in reader.records([Kind.SUT_ACCEPTED])}
    assert sorted(by_arrival) == list(range(1, submitted + 1))
    at_esp = Counter(r["id"] for r in reader.records([Kind.ESP_ACCEPTED]))
    assert {n for n, cid in by_arrival.items() if at_esp[cid] == 0} == set(DROP) | set(HOLD)
    assert {n for n, cid in by_arrival.items() if at_esp[cid] == 2} == set(DUP)


def _append(path: Path, text: str | bytes) -> None:
    with path.open("ab") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)


DAMAGE = {
    "junk-line": lambda d: _append(d / "ledger" / "load-0.jsonl", "garbage\n"),
    "binary-line": lambda d: _append(d / "ledger" / "esp-smtp-0.jsonl", b"\xff\xfe\x00\n"),
    "torn-line": lambda d: _append(d / "ledger" / "esp-smtp-0.jsonl", '{"t":1,"k":"esp.acc'),
    "missing-fields": lambda d: _append(d / "ledger" / "esp-smtp-0.jsonl", '{"t":1,"k":"esp.accepted"}\n'),
    "json-list": lambda d: _append(d / "ledger" / "load-0.jsonl", "[1, 2, 3]\n"),
    "null-time": lambda d: _append(d / "ledger" / "esp-smtp-0.jsonl", '{"t":null,"k":"esp.accepted"}\n'),
    "text-time": lambda d: _append(d / "ledger" / "load-0.jsonl", '{"t":"soon","k":"load.submit"}\n'),
    "empty-ledger": lambda d: [p.write_text("") for p in (d / "ledger").glob("*.jsonl")],
    "no-slo": lambda d: (d / "slo.json").unlink(),
    "bad-slo": lambda d: (d / "slo.json").write_text('{"max_lost": "many"}'),
    "run-json-a-list": lambda d: (d / "run.json").write_text("[]"),
    "run-json-empty-object": lambda d: (d / "run.json").write_text("{}"),
    "scenario-garbage": lambda d: (d / "scenario.yaml").write_text(": : :\n"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_report_on_a_damaged_run_directory_reports_or_refuses_in_one_line(broken_run, damage, tmp_path):
    """`mailstorm report` on a damaged copy of the run either rebuilds the reports (exit 1: this run
    fails its SLOs) or refuses in one line (exit 2); never a traceback, never an internal error."""
    copy = tmp_path / "run"
    shutil.copytree(broken_run[1], copy)
    DAMAGE[damage](copy)
    out = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "report", str(copy)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert "Traceback" not in out.stderr + out.stdout
    assert out.returncode in (1, 2), (out.returncode, out.stderr)
    assert len(out.stderr.splitlines()) == (1 if out.returncode == 2 else 0), out.stderr
