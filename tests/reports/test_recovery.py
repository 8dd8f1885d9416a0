"""Recovery per fault window: found on the timeline, and measured within a second of the truth."""

from __future__ import annotations

import pytest

from mailstorm.ledger import ChaosBegin, ChaosEnd, LedgerWriter
from mailstorm.reports.analysis import analyze
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.synthetic import T0_NS, synthesize


def test_outage_recovery_within_one_second_of_truth(outage_run):
    """A 10 s outage drained at 3x the offered rate: recovery, drain, peak backlog and probes as built."""
    run_dir, truth = outage_run
    faults = analyze(run_dir).figures["faults"]
    assert len(faults) == 1
    f = faults[0]
    assert (f["name"], f["start_s"], f["end_s"]) == ("esp-outage", 20.0, 30.0)
    assert f["recovered"]
    assert abs(f["time_to_recover_s"] - truth.recovered_s) <= 1.0
    assert abs(f["drain_s"] - truth.recovered_s) <= 1.0
    assert f["time_to_impact_s"] <= 1.0
    # About one second of mail in flight plus ten seconds of held mail at 100 msg/s.
    assert 1000 <= f["peak_backlog"] <= 1100
    # The synthetic probes fail from 2 s after the outage starts until 1 s after it ends.
    assert f["probe_noticed_s"] == pytest.approx(2.5, abs=0.01)
    assert f["probe_cleared_s"] == pytest.approx(1.5, abs=0.01)
    # Every bad outcome of this run was submitted before the window's end or after it; none is lost here.
    assert f["lost"] + f["bounced"] + f["duplicated"] <= truth.lost + truth.bounced + truth.duplicated


@pytest.mark.parametrize(
    ("rate", "capacity", "outage"),
    [(200.0, 500.0, (15.0, 25.0)), (50.0, 100.0, (10.0, 14.0)), (300.0, 1200.0, (30.0, 50.0))],
)
def test_recovery_tracks_the_drain(tmp_path, rate, capacity, outage):
    """Whatever the rate, capacity and outage length, recovery is within 1 s of when the queue emptied."""
    truth = synthesize(tmp_path, rates=[rate] * 70, capacity=capacity, outage=outage, seed=3)
    f = analyze(tmp_path).figures["faults"][0]
    expected = (outage[1] - outage[0]) * rate / (capacity - rate)  # held mail / net drain rate
    assert truth.recovered_s == pytest.approx(expected, abs=0.5)
    assert abs(f["time_to_recover_s"] - truth.recovered_s) <= 1.0


def test_never_recovered_fails_the_slo(tmp_path):
    """A fault whose backlog outlives the run is 'never recovered' and breaches max_recovery_s."""
    synthesize(
        tmp_path, rates=[100.0] * 40, capacity=105.0, outage=(20.0, 38.0), slo=SloSpec(max_recovery_s=30)
    )
    a = analyze(tmp_path)
    f = a.figures["faults"][0]
    assert not f["recovered"] and f["time_to_recover_s"] is None
    slo = {s["name"]: s for s in a.figures["slo"]}
    assert not slo["max_recovery_s"]["passed"]


def test_windows_from_any_ledger_and_open_begin(tmp_path):
    """A chaos.begin with no end lasts to the end; a window recorded in a ledger file of its own (how a
    run directory put together by hand says where its faults were) is found with the timeline's."""
    synthesize(tmp_path, rates=[100.0] * 30)
    with LedgerWriter(tmp_path / "ledger", "timeline") as tl:
        tl.write(ChaosBegin(name="kill-sut", what="target", params={}), t=T0_NS + 25 * 1_000_000_000)
    with LedgerWriter(tmp_path / "ledger", "by-hand") as mine:
        mine.write(ChaosBegin(name="slow-esp", what="esp_fault", params={}), t=T0_NS + 5 * 1_000_000_000)
        mine.write(ChaosEnd(name="slow-esp", what="esp_fault", params={}), t=T0_NS + 8 * 1_000_000_000)
    faults = analyze(tmp_path).figures["faults"]
    assert [(f["name"], f["start_s"]) for f in faults] == [("slow-esp", 5.0), ("kill-sut", 25.0)]
    assert faults[1]["end_s"] >= 30.0
