"""Analytics through ``mailstorm run``, end to end: the library's analytics-crash (the one proof that a
receiver killed mid-burst loses and doubles no event once the ESP has retried), and the receiver's
sut.event records standing for a probe. The receiver is the real reference pipeline, the poster the real
fake ESP."""

from __future__ import annotations

import json
from collections import Counter

from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import LIBRARY, run_cli


def test_analytics_crash_counts_every_event_once_and_shows_the_gap(tmp_path):
    """Posts failed while the receiver was down, the ESP retried them, the final counts equal the events:
    error 0; the crash's row shows the events posted into it, the probe unanswered and the count behind."""
    code, run_dir, err = run_cli(LIBRARY / "analytics-crash.yaml", tmp_path / "runs", timeout=240)
    assert code == 0, err[-3000:]
    a = json.loads((run_dir / "report.json").read_text())["analytics"]
    assert a["source"] == "probe" and a["probe"]["final"] and a["cannot_judge"] is None
    total = a["kinds"]["total"]
    assert total["error"] == 0 and total["sent"] == total["acknowledged"] == total["counted"] > 100
    assert a["kinds"]["open"]["sent"] > 0 and a["kinds"]["click"]["sent"] > 0
    reader = LedgerReader(run_dir / "ledger")
    hooks = list(reader.records([Kind.ESP_WEBHOOK]))
    # The crash really hit posts: some failed with no answer, and each of those was acknowledged later.
    failed = {r["event_id"] for r in hooks if r["attempt"] and not r["ok"]}
    acked = {r["event_id"] for r in hooks if r["ok"]}
    assert failed and failed <= acked
    # The receiver's own records: each event counted once, the same as the ESP's distinct events.
    counted = Counter(r["event_id"] for r in reader.records([Kind.SUT_EVENT]))
    assert set(counted) == {r["event_id"] for r in hooks if r["attempt"]} and set(counted.values()) == {1}
    (w,) = a["windows"]
    assert w["name"] == "receiver-crash" and w["inside"]["sent"] > 0 and w["blind_s"] >= 1
    assert w["max_gap"] is not None and w["max_gap"] > 0
    md = (run_dir / "report.md").read_text()
    assert "| receiver-crash | 2\N{EN DASH}3 |" in md and "max_analytics_error" in md


def test_without_a_probe_the_receivers_sut_event_records_are_its_counts(tmp_path):
    """No probe: the receiver's sut.event records are the SUT's counts, compared event id by event id."""
    scenario = (LIBRARY / "analytics-crash.yaml").read_text()
    scenario = scenario.replace("  probe: {url: target, every: 0.25s}\n", "")
    scenario = scenario.replace("duration: 6s", "duration: 2s").split("chaos:")[0]
    scenario += "slo: {max_analytics_error: 0}\n"
    path = tmp_path / "no-probe.yaml"
    path.write_text(scenario)
    code, run_dir, err = run_cli(path, tmp_path / "runs", timeout=180)
    a = json.loads((run_dir / "report.json").read_text())["analytics"]
    assert a["source"] == "events" and a["exact"] and a["kinds"]["total"]["error"] == 0
    assert code == 0, err[-3000:]
