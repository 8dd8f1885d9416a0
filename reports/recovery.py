"""Recovery per fault window: when it hurt, when it healed, and what it cost.

Windows come from the ledgers' ``chaos.begin``/``chaos.end`` records (paired by name, in order; a begin
with no end lasts to the end of the run), the runner's timeline or any other ledger file (how a run
directory put together by hand records its faults).

Judging a second. The *baseline* is up to 30 seconds before the fault, skipping the run's first 2 s
(warm-up) and any earlier fault and its recovery; failing that, every second outside all faults. Its
figures are medians: delivery rate, offered rate, per-second p95 latency and backlog. A second is
*healthy* when (1) its delivery rate is within the tolerance of the baseline rate scaled by that
second's offered rate (so a shape that changes rate, or a load that has ended, is judged fairly),
where the tolerance is ``max(recovery_tolerance * expected, 2 * sqrt(expected) + 1)`` (the Poisson
noise of a low rate is not a fault), and (2) its p95 latency is at most
``max(baseline_p95 * (1 + recovery_tolerance), baseline_p95 + 50 ms)`` (a second with no delivery
passes when none was expected).

Figures, in seconds: ``time_to_impact_s`` from the fault's start to the start of its first unhealthy
second; ``time_to_recover_s`` from the fault's end to the start of the first run of ``recovery_k``
healthy seconds (a shorter healthy run that reaches the end of the data also counts; None: never
recovered); ``peak_backlog`` over the fault and its recovery; ``drain_s`` from the fault's end until
the backlog is back to the baseline's (same tolerance); ``lost``, ``bounced``, ``duplicated`` and
``delayed`` (delivered slower than the latency limit above) count messages intended after the
previous window's end and no later than this one's end (the messages in or before this window);
``probe_noticed_s`` and ``probe_cleared_s``: when the SUT's own probes first failed after the start,
and first passed again after that, relative to the fault's start and end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mailstorm.ledger import ChaosBegin, ChaosEnd, Probe, Record
from mailstorm.reports.fate import BOUNCED, DUPLICATED, LOST, NEVER
from mailstorm.reports.series import Series
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import Store

_NS = 1_000_000_000
_BASELINE_S = 30
_WARMUP_S = 2
_LATENCY_FLOOR_MS = 50.0


@dataclass(frozen=True)
class Window:
    name: str
    start_s: float  # from the run's start
    end_s: float
    what: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the chaos step's own settings
    esp: str | None = None  # the ESP an ESP step acted on, in a run with several


@dataclass
class Recovery:
    name: str
    what: str | None
    start_s: float
    end_s: float
    baseline_rate: float | None
    baseline_p95_ms: float | None
    time_to_impact_s: float | None
    time_to_recover_s: float | None
    recovered: bool
    peak_backlog: int
    drain_s: float | None
    lost: int
    bounced: int
    duplicated: int
    delayed: int
    probe_noticed_s: float | None
    probe_cleared_s: float | None
    # Whether the fault touched anything (mailstorm.reports.effects), filled in by the analysis.
    no_effect: bool = False
    effect: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fault_windows(timeline: list[Record], t0_ns: int, end_s: float) -> list[Window]:
    """Pair chaos.begin/chaos.end by name, in order."""
    open_: dict[str, list[ChaosBegin]] = {}
    found: list[Window] = []
    for rec in timeline:
        if not isinstance(rec, ChaosBegin | ChaosEnd):
            continue
        name = rec.name or rec.what or "fault"
        if isinstance(rec, ChaosBegin):
            open_.setdefault(name, []).append(rec)
        elif open_.get(name):
            b = open_[name].pop(0)
            found.append(Window(name, (b.t - t0_ns) / _NS, (rec.t - t0_ns) / _NS, b.what, _params(b), b.esp))
    for name, begins in open_.items():
        found.extend(Window(name, (b.t - t0_ns) / _NS, end_s, b.what, _params(b), b.esp) for b in begins)
    return sorted(found, key=lambda w: (w.start_s, w.end_s))


def _params(rec: ChaosBegin) -> dict[str, Any]:
    return rec.params if isinstance(rec.params, dict) else {}


def recoveries(windows: list[Window], series: Series, store: Store, slo: SloSpec) -> list[Recovery]:
    """Each window's recovery: the per-second judgement over ``series``, then every window's message
    counts in one query over ``store``'s ``msg`` table (probes from ``store.timeline``)."""
    n = len(series)
    busy = np.zeros(n, dtype=bool)  # seconds inside a fault or its recovery: never a baseline
    figures: list[dict[str, Any]] = []
    spans: list[tuple[int, int, float]] = []  # (after, up to) intended ns and the latency limit
    prev_end_ns = None
    for w in windows:
        b0, e0 = int(np.floor(w.start_s)), int(np.floor(w.end_s))
        base = _baseline_seconds(n, b0, busy, windows)
        healthy, lat_limit, base_rate, base_p95 = _health(series, base, slo.recovery_tolerance)
        rec_sec = _first_run(healthy, max(e0, 0), slo.recovery_k)
        stop = rec_sec if rec_sec is not None else n
        busy[max(b0, 0) : min(stop + 1, n)] = True
        impact = next((s for s in range(max(b0, 0), min(stop, n)) if not healthy[s]), None)
        base_backlog = float(np.median(series.backlog[base])) if len(base) else 0.0
        slack = max(slo.recovery_tolerance * base_backlog, 2 * np.sqrt(base_backlog) + 1)
        drained = next((s for s in range(max(e0, 0), n) if series.backlog[s] <= base_backlog + slack), None)
        t0 = series.t0_ns
        lo = prev_end_ns if prev_end_ns is not None else -NEVER
        hi = t0 + int(w.end_s * _NS)
        spans.append((lo, hi, float(lat_limit)))
        noticed, cleared = _probes(store.timeline, t0 + int(w.start_s * _NS), t0 + int(w.end_s * _NS))
        figures.append(
            dict(
                name=w.name,
                what=w.what,
                start_s=round(w.start_s, 3),
                end_s=round(w.end_s, 3),
                baseline_rate=None if base_rate is None else round(base_rate, 3),
                baseline_p95_ms=None if base_p95 is None else round(base_p95, 3),
                time_to_impact_s=None if impact is None else round(max(impact - w.start_s, 0.0), 3),
                time_to_recover_s=None if rec_sec is None else round(max(rec_sec - w.end_s, 0.0), 3),
                recovered=rec_sec is not None,
                peak_backlog=int(series.backlog[max(b0, 0) : min(stop + 1, n)].max(initial=0)),
                drain_s=None if drained is None else round(max(drained + 1 - w.end_s, 0.0), 3),
                probe_noticed_s=noticed,
                probe_cleared_s=cleared,
            )
        )
        prev_end_ns = hi
    return [
        Recovery(**f, lost=lost, bounced=bounced, duplicated=duplicated, delayed=delayed)
        for f, (lost, bounced, duplicated, delayed) in zip(figures, _harm(store, spans), strict=True)
    ]


def _harm(store: Store, spans: list[tuple[int, int, float]]) -> list[tuple[int, int, int, int]]:
    """(lost, bounced, duplicated, delayed) of the messages intended in each span (after, up to]:
    delayed = reached the ESP slower than the span's latency limit (ms; inf: no limit)."""
    if not spans:
        return []
    rows = ", ".join(f"({i}, {lo}, {hi}, ?::DOUBLE)" for i, (lo, hi, _) in enumerate(spans))
    got = {
        int(i): tuple(int(x) for x in counts)
        for i, *counts in store.rows(
            f"""SELECT w.i, count(*) FILTER (WHERE m.outcome = {LOST}),
                    count(*) FILTER (WHERE m.outcome = {BOUNCED}),
                    count(*) FILTER (WHERE m.outcome = {DUPLICATED}),
                    count(*) FILTER (WHERE m.first_esp != {NEVER}
                                       AND (m.first_esp - m.intended) / 1e6 > w.lim)
                FROM (VALUES {rows}) AS w(i, lo, hi, lim)
                JOIN msg AS m ON m.intended > w.lo AND m.intended <= w.hi GROUP BY w.i""",
            [lim for _, _, lim in spans],
        )
    }
    return [got.get(i, (0, 0, 0, 0)) for i in range(len(spans))]


def _baseline_seconds(n: int, b0: int, busy: np.ndarray, windows: list[Window]) -> np.ndarray:
    lo = max(_WARMUP_S, b0 - _BASELINE_S)
    base = np.arange(lo, min(max(b0, 0), n))
    base = base[~busy[base]] if len(base) else base
    if len(base) >= 3:
        return base
    # No quiet time before this fault: fall back to every second outside all faults.
    outside = np.ones(n, dtype=bool)
    outside[:_WARMUP_S] = False
    for w in windows:
        outside[max(int(w.start_s), 0) : min(int(np.ceil(w.end_s)) + _BASELINE_S, n)] = False
    return np.flatnonzero(outside)


def _health(
    series: Series, base: np.ndarray, tol: float
) -> tuple[np.ndarray, float, float | None, float | None]:
    n = len(series)
    if len(base) == 0:
        return np.ones(n, dtype=bool), np.inf, None, None
    base_rate = float(np.median(series.delivered[base]))
    base_offered = float(np.median(series.offered[base]))
    p95s = series.p95_ms[base]
    base_p95 = float(np.nanmedian(p95s)) if np.isfinite(p95s).any() else None
    expected = base_rate * (series.offered / base_offered) if base_offered > 0 else np.full(n, base_rate)
    rate_ok = np.abs(series.delivered - expected) <= np.maximum(tol * expected, 2 * np.sqrt(expected) + 1)
    lat_limit = np.inf if base_p95 is None else max(base_p95 * (1 + tol), base_p95 + _LATENCY_FLOOR_MS)
    with np.errstate(invalid="ignore"):
        lat_ok = np.where(series.delivered > 0, series.p95_ms <= lat_limit, expected < 1)
    return rate_ok & lat_ok, lat_limit, base_rate, base_p95


def _first_run(healthy: np.ndarray, start: int, k: int) -> int | None:
    """First second >= start opening k healthy seconds in a row (or a healthy run to the end)."""
    run = 0
    for s in range(start, len(healthy)):
        run = run + 1 if healthy[s] else 0
        if run == k:
            return s - k + 1
    return len(healthy) - run if run else None


def _probes(timeline: list[Record], begin_ns: int, end_ns: int) -> tuple[float | None, float | None]:
    probes = [r for r in timeline if isinstance(r, Probe) and r.t >= begin_ns]
    bad = next((r for r in probes if not r.ok), None)
    if bad is None:
        return None, None
    good = next((r for r in probes if r.t > max(bad.t, end_ns) and r.ok), None)
    noticed = round((bad.t - begin_ns) / _NS, 3)
    return noticed, None if good is None else round((good.t - end_ns) / _NS, 3)
