"""Reports while a run goes: report.html/json rebuilt every ``reports.every`` marked partial, the final
ones not; the live console's ETA."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from mailstorm.harness.partials import DEFAULT_EVERY_S, every_s
from mailstorm.harness.progress import LiveStats, Progress
from mailstorm.reports.spec import ReportSpec
from tests.harness.sut_support import start_run, wait_for_load

SCENARIO = """name: partials
seed: 5
duration: 15s
drain_deadline: 20s
target: {kind: reference}
load:
  shape: {kind: steady, rate: 20}
reports: {every: 2s}
slo: {max_lost: 0}
"""


@pytest.mark.parametrize(
    ("every", "duration", "expect"),
    [
        (None, 60, None),
        (None, 900, None),
        (None, 901, DEFAULT_EVERY_S),
        ("10s", 60, 10.0),
        ("10s", 3600, 10.0),
    ],
)
def test_how_often_partial_reports_are_rebuilt(every, duration, expect):
    spec = ReportSpec() if every is None else ReportSpec(every=every)
    assert every_s(spec, duration) == expect
    assert DEFAULT_EVERY_S == 300.0  # the documented default: 5 minutes, on runs over 15 minutes


def test_a_partial_report_appears_during_the_run_marked_partial_and_the_final_one_is_not(tmp_path):
    scenario = tmp_path / "partials.yaml"
    scenario.write_text(SCENARIO)
    out, err = tmp_path / "runs", tmp_path / "stderr.txt"
    run = start_run(scenario, out, err)
    try:
        run_dir = wait_for_load(run, out, err)
        partial = None
        deadline = time.monotonic() + 60
        while partial is None and run.poll() is None and time.monotonic() < deadline:
            report = run_dir / "report.json"
            if report.exists():  # written whole (write then rename)
                partial = json.loads(report.read_bytes())
            else:
                time.sleep(0.2)  # polling the run directory for the first partial report
        assert partial is not None, (run_dir / "logs" / "partials.log").read_text()
        assert partial["partial"]["of_s"] == 15
        assert partial["partial"]["text"] == f"partial, at {partial['partial']['at_s']:.0f} s of 15 s"
        assert partial["partial"]["at_s"] >= 2
        page = (run_dir / "report.html").read_text()
        assert "Partial, at " in page and "the run is still going" in page
        assert not (run_dir / "junit.xml").exists()  # the final reports only
        assert run.wait(120) == 0, err.read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    final = json.loads((run_dir / "report.json").read_bytes())
    assert "partial" not in final and final["verdict"] == "pass"
    page = (run_dir / "report.html").read_text()
    assert "Partial, at " not in page and "the run is still going" not in page
    assert (run_dir / "junit.xml").exists()
    assert "partial report at" in (run_dir / "logs" / "partials.log").read_text()
    assert not list(Path(run_dir).glob("*.tmp"))


class _Stats(LiveStats):
    def __init__(self, backlog: int, delivered_per_s: float) -> None:
        super().__init__()
        self._backlog, self._rate = backlog, delivered_per_s

    @property
    def backlog(self) -> int:
        return self._backlog

    def rate(self, what: str, now_s: float | None = None) -> float:
        return self._rate if what == "delivered" else 0.0


def test_the_eta_is_the_load_left_then_the_backlog_at_the_delivery_rate_within_the_drain_deadline():
    p = Progress("x", 60, enabled=False, drain_s=30)
    assert p.eta(_Stats(100, 50), 20, "load") == "40 s of load + drain ~2 s"
    assert (
        p.eta(_Stats(100, 0), 20, "load") == "40 s of load + drain ~30 s"
    )  # nothing delivered: the deadline
    p.update(_Stats(0, 0), elapsed_s=61, phase="drain", faults=[])
    assert p.eta(_Stats(1000, 10), 71, "drain") == "drain ~20 s"  # 100 s at the rate; 20 s of deadline left
    assert p.eta(_Stats(50, 10), 71, "drain") == "drain ~5 s"
    assert Progress("x", 60, enabled=False).eta(_Stats(0, 0), 80, "drain") == "drain: unknown"
