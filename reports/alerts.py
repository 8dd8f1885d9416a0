"""Alerts judged per fault window: did an alert fire for each fault, how fast, did it resolve, and did
any fire when nothing was wrong.

Input: the ``alert.firing`` / ``alert.resolved`` records (mailstorm.harness.alerts.receiver: one per
alert of each Alertmanager notification, dated on arrival), the fault windows with their recovery
(mailstorm.reports.recovery) and the scenario's ``alerts.map`` / ``alerts.grace``
(mailstorm.reports.spec.AlertMatchSpec).

An *episode* is one alert (by fingerprint) from its first firing notification to its resolution (a
repeated firing notification belongs to the open episode). Times are the notifications' arrival at the
receiver: what an on-call person would have seen.

A window's *span* is from the fault's start to its end plus its recovery time plus ``grace`` (to the
end of the run when it never recovered). An episode is *put down to* a window when it began inside the
window's span and its alert is one ``map`` assigns to that window, or any alert when ``map`` assigns
none to it. Per window: ``time_to_fire_s`` (fault start -> the first such episode), ``time_to_resolve_s``
(fault end -> the last of them resolved; None while one still fired at the end; negative when they
resolved before the fault ended), ``missed`` (none). A *false alert* is an episode that began inside no
window's span, before the first fault included: a rule that fires at start is one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mailstorm.ledger import AlertFiring, AlertResolved, Record
from mailstorm.reports.recovery import Recovery
from mailstorm.reports.slo import SloResult
from mailstorm.reports.spec import AlertMatchSpec, SloSpec

_NS = 1_000_000_000


@dataclass(frozen=True)
class Episode:
    name: str
    fingerprint: str
    start_s: float  # first firing notification, from the run's start
    end_s: float | None  # its resolution; None: still firing when the run ended


@dataclass
class AlertWindow:
    name: str
    start_s: float
    end_s: float
    span_end_s: float | None  # None: to the end of the run (the fault never recovered)
    expected: list[str]  # the alerts map assigns to it; empty: any alert
    alerts: list[str] = field(default_factory=list)  # the alerts put down to it, in firing order
    time_to_fire_s: float | None = None
    time_to_resolve_s: float | None = None
    missed: bool = True


@dataclass
class AlertReport:
    windows: list[AlertWindow]
    false_alerts: list[Episode]
    episodes: list[Episode]
    notifications: int

    @property
    def missed(self) -> list[AlertWindow]:
        return [w for w in self.windows if w.missed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "windows": [asdict(w) for w in self.windows],
            "false_alerts": [asdict(e) for e in self.false_alerts],
            "episodes": [asdict(e) for e in self.episodes],
            "notifications": self.notifications,
            "missed": len(self.missed),
        }


def episodes(timeline: list[Record], t0_ns: int) -> tuple[list[Episode], int]:
    """Every alert episode (by first firing), and the number of notices read."""
    open_: dict[str, tuple[str, float]] = {}
    done: list[Episode] = []
    notices = 0
    for rec in sorted((r for r in timeline if isinstance(r, AlertFiring | AlertResolved)), key=lambda r: r.t):
        notices += 1
        key = rec.fingerprint or f"{rec.name}{sorted(rec.labels.items())}"
        at = (rec.t - t0_ns) / _NS
        if isinstance(rec, AlertFiring):
            open_.setdefault(key, (rec.name, at))
        elif key in open_:
            name, start = open_.pop(key)
            done.append(Episode(name, key, round(start, 3), round(at, 3)))
    done += [Episode(name, key, round(start, 3), None) for key, (name, start) in open_.items()]
    return sorted(done, key=lambda e: e.start_s), notices


def alert_report(
    timeline: list[Record], recs: list[Recovery], t0_ns: int, match: AlertMatchSpec
) -> AlertReport:
    eps, notices = episodes(timeline, t0_ns)
    windows: list[AlertWindow] = []
    for r in recs:
        span_end = (
            r.end_s + r.time_to_recover_s + match.grace
            if r.recovered and r.time_to_recover_s is not None
            else None
        )
        expected = sorted(name for name, steps in match.map.items() if r.name in steps)
        windows.append(AlertWindow(r.name, r.start_s, r.end_s, span_end, expected))

    def inside(w: AlertWindow, e: Episode) -> bool:
        return w.start_s <= e.start_s <= (math.inf if w.span_end_s is None else w.span_end_s)

    for w in windows:
        mine = [e for e in eps if inside(w, e) and (not w.expected or e.name in w.expected)]
        if not mine:
            continue
        w.missed = False
        w.alerts = list(dict.fromkeys(e.name for e in mine))
        w.time_to_fire_s = round(mine[0].start_s - w.start_s, 3)
        ends = [e.end_s for e in mine]
        w.time_to_resolve_s = None if None in ends else round(max(ends) - w.end_s, 3)
    false = [e for e in eps if not any(inside(w, e) for w in windows)]
    return AlertReport(windows, false, eps, notices)


def judge_alerts(slo: SloSpec, report: AlertReport | None) -> list[SloResult]:
    """The alert SLOs that are set; each fails when the run had no ``alerts:`` section to judge."""
    wanted = [
        (name, target)
        for name, target in (
            ("max_time_to_alert_s", slo.max_time_to_alert_s),
            ("max_false_alerts", slo.max_false_alerts),
            ("max_missed_alerts", slo.max_missed_alerts),
        )
        if target is not None
    ]
    out: list[SloResult] = []
    for name, target in wanted:
        unit = "s" if name == "max_time_to_alert_s" else "alerts"
        if report is None:
            why = "the scenario has no alerts section: no alert was watched"
            out.append(SloResult(name, target, None, False, unit, why))
        elif name == "max_false_alerts":
            n = len(report.false_alerts)
            which = ", ".join(f"{e.name} at {e.start_s:g}s" for e in report.false_alerts[:5])
            detail = f"alerts fired outside every fault window and its recovery: {n}" + (
                f" ({which})" if n else ""
            )
            out.append(SloResult(name, target, n, n <= target, unit, f"{detail}, limit {target:g}"))
        elif name == "max_missed_alerts":
            n = len(report.missed)
            which = ", ".join(w.name for w in report.missed)
            detail = f"fault windows no alert fired for: {n}" + (f" ({which})" if n else "")
            out.append(SloResult(name, target, n, n <= target, unit, f"{detail}, limit {target:g}"))
        elif not report.windows:
            out.append(SloResult(name, target, None, True, unit, "no fault window in this run"))
        else:
            fired = [w.time_to_fire_s for w in report.windows if w.time_to_fire_s is not None]
            worst = max(fired) if fired else None
            if report.missed:
                which = ", ".join(w.name for w in report.missed)
                detail = f"no alert fired for {which}, limit {target:g} s"
                out.append(SloResult(name, target, worst, False, unit, detail))
            else:
                detail = f"slowest fault start -> first alert: {worst:g} s, limit {target:g} s"
                out.append(SloResult(name, target, worst, worst <= target, unit, detail))
    return out
