"""Truth against a known-broken pipeline: a full ``mailstorm run`` (the CLI, as a user runs it) against
tests/hardening/broken_sut.py as a ``process`` target, which drops 4 chosen messages, relays 3 others
twice and holds 2 past the deadline. report.json must count exactly 4 lost, 3 duplicated, 2 pending and
the rest delivered, the ledgers must show it was those very messages, and the run must fail its SLOs
(exit 1)."""

from __future__ import annotations

import json
from collections import Counter

from harness.ledger import Kind, LedgerReader
from tests.harness.sut_support import run_cli

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


def test_a_run_against_a_known_broken_pipeline_reports_exactly_its_faults(tmp_path):
    """Exactly the dropped, duplicated and held messages are counted lost, duplicated and pending; the
    verdict fails with exit code 1."""
    path = tmp_path / "broken.yaml"
    path.write_text(SCENARIO)
    code, run_dir, err = run_cli(path, tmp_path / "runs", timeout=180)
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
    }
    assert report["verdict"] == "fail"
    judged = {s["name"]: (s["actual"], s["passed"]) for s in report["slo"]}
    assert judged["max_lost"] == (len(DROP), False) and judged["max_duplicated"] == (len(DUP), False)

    reader = LedgerReader(run_dir / "ledger")
    by_arrival = {r["queue_id"]: r["id"] for r in reader.records([Kind.SUT_ACCEPTED])}
    assert sorted(by_arrival) == list(range(1, submitted + 1))
    at_esp = Counter(r["id"] for r in reader.records([Kind.ESP_ACCEPTED]))
    assert {n for n, cid in by_arrival.items() if at_esp[cid] == 0} == set(DROP) | set(HOLD)
    assert {n for n, cid in by_arrival.items() if at_esp[cid] == 2} == set(DUP)
