"""Alerts judged per fault window (mailstorm.reports.alerts), from records built as the receiver writes
them and recoveries as the recovery analysis gives them."""

from __future__ import annotations

import pytest

from mailstorm.ledger import AlertFiring, AlertResolved
from mailstorm.reports.alerts import alert_report, episodes, judge_alerts
from mailstorm.reports.recovery import Recovery
from mailstorm.reports.spec import AlertMatchSpec, SloSpec

T0 = 1_800_000_000 * 1_000_000_000
_NS = 1_000_000_000


def notice(kind, name: str, at_s: float, fp: str | None = None):
    return kind(name=name, fingerprint=fp or name, labels={"alertname": name}, t=T0 + int(at_s * _NS))


def window(name: str, start: float, end: float, recover: float | None) -> Recovery:
    return Recovery(
        name=name, what="esp_outage", start_s=start, end_s=end, baseline_rate=10.0, baseline_p95_ms=50.0,
        time_to_impact_s=0.5, time_to_recover_s=recover, recovered=recover is not None, peak_backlog=10,
        drain_s=1.0, lost=0, bounced=0, duplicated=0, delayed=0, probe_noticed_s=None, probe_cleared_s=None,
    )  # fmt: skip


def test_episodes_pair_firing_and_resolution_by_fingerprint() -> None:
    timeline = [
        notice(AlertFiring, "A", 5.0, "a1"),
        notice(AlertFiring, "A", 6.0, "a1"),  # repeated: the same episode
        notice(AlertFiring, "A", 5.5, "a2"),  # same name, other labels: its own
        notice(AlertResolved, "A", 9.0, "a1"),
        notice(AlertResolved, "B", 3.0, "b"),  # a resolution of nothing open: ignored
        notice(AlertFiring, "A", 12.0, "a1"),  # fires again: a new episode
    ]
    eps, n = episodes(timeline, T0)
    assert n == 6
    assert [(e.fingerprint, e.start_s, e.end_s) for e in eps] == [
        ("a1", 5.0, 9.0), ("a2", 5.5, None), ("a1", 12.0, None)
    ]  # fmt: skip


def test_time_to_fire_resolve_missed_and_false_alerts() -> None:
    recs = [
        window("down", 10.0, 20.0, 4.0),
        window("slow", 40.0, 50.0, 2.0),
        window("lost", 70.0, 75.0, None),
    ]
    timeline = [
        notice(AlertFiring, "Always", -1.0),  # fires at start: false
        notice(AlertFiring, "EspDown", 13.0),
        notice(AlertResolved, "EspDown", 22.5),
        notice(AlertFiring, "Backlog", 15.0),  # any alert: mapped to nothing, still in a window
        notice(AlertResolved, "Backlog", 25.0),
        notice(AlertFiring, "EspDown", 31.0),  # 20 + 4 + grace 5 = 29: outside every window's span
        notice(AlertResolved, "EspDown", 32.0),
        notice(AlertFiring, "Backlog", 44.0),  # in "slow", which expects EspDown only: not its catch
        notice(AlertResolved, "Backlog", 46.0),
        notice(AlertFiring, "Late", 90.0),  # "lost" never recovered: its span lasts to the end
    ]
    match = AlertMatchSpec(map={"EspDown": ("down", "slow")}, grace=5.0)
    report = alert_report(timeline, recs, T0, match)
    down, slow, lost = report.windows
    assert down.expected == ["EspDown"] and down.alerts == ["EspDown"]
    assert down.time_to_fire_s == 3.0 and down.time_to_resolve_s == 2.5 and not down.missed
    assert slow.missed and slow.time_to_fire_s is None and slow.alerts == []
    assert lost.expected == [] and lost.alerts == ["Late"] and lost.time_to_fire_s == 20.0
    assert lost.time_to_resolve_s is None  # still firing at the end
    assert [(e.name, e.start_s) for e in report.false_alerts] == [("Always", -1.0), ("EspDown", 31.0)]
    assert [w.name for w in report.missed] == ["slow"]
    assert report.as_dict()["missed"] == 1

    slo = SloSpec(max_time_to_alert_s=5, max_false_alerts=0, max_missed_alerts=1)
    results = {r.name: r for r in judge_alerts(slo, report)}
    assert (
        not results["max_time_to_alert_s"].passed
        and "no alert fired for slow" in results["max_time_to_alert_s"].detail
    )
    assert results["max_time_to_alert_s"].actual == 20.0
    assert not results["max_false_alerts"].passed and results["max_false_alerts"].actual == 2
    assert "Always at -1s" in results["max_false_alerts"].detail
    assert results["max_missed_alerts"].passed and results["max_missed_alerts"].actual == 1


def test_slos_pass_when_every_fault_is_caught_in_time() -> None:
    timeline = [notice(AlertFiring, "A", 12.0), notice(AlertResolved, "A", 21.0)]
    report = alert_report(timeline, [window("w", 10.0, 20.0, 1.0)], T0, AlertMatchSpec())
    slo = SloSpec(max_time_to_alert_s=2, max_false_alerts=0, max_missed_alerts=0)
    assert all(r.passed for r in judge_alerts(slo, report))
    assert [r.actual for r in judge_alerts(slo, report)] == [2.0, 0, 0]


def test_alert_slos_without_an_alerts_section_fail() -> None:
    """An alert objective nobody watched cannot hold: no false PASS."""
    results = judge_alerts(SloSpec(max_false_alerts=0, max_missed_alerts=0), None)
    assert [r.passed for r in results] == [False, False]
    assert all("no alerts section" in r.detail for r in results)
    assert judge_alerts(SloSpec(), None) == []  # none set: none judged


def test_no_fault_window() -> None:
    report = alert_report([notice(AlertFiring, "A", 3.0)], [], T0, AlertMatchSpec())
    (result,) = judge_alerts(SloSpec(max_time_to_alert_s=5), report)
    assert result.passed and result.detail == "no fault window in this run"
    assert len(report.false_alerts) == 1


@pytest.mark.parametrize("grace", [-1, "soon"])
def test_bad_grace_is_refused(grace) -> None:
    with pytest.raises(ValueError, match="grace"):
        AlertMatchSpec(grace=grace)
