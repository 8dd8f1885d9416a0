"""One run directory -> every figure the reports show (pure: reads files, writes nothing).

Reads ``slo.json`` (``SloSpec``; ``SloSpec()`` when absent), ``run.json`` (``mailstorm.runinfo.RunInfo``:
``run_id``, ``name``, ``seed``, ``started_ns``, ``endpoints``, ``esp_limits``, ``report`` (a
``ReportSpec``)), ``scenario.yaml`` (only its ``load`` section: the shape, for capacity; max_connections,
max_lag_s and correlation, for the load and correlation checks) and ``ledger/*.jsonl``, and assembles
``Analysis``: the figures as one JSON-ready dict (``figures``, the shape of ``report.json``) plus the arrays
the plots use.

The ledgers are read into a ``Store`` (reports/store.py: DuckDB, memory bounded by its limit, not by the
run) and every section computes from it with aggregates; what Python holds is bounded by the run's
seconds, windows and steps, never a row per message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError

from mailstorm.errors import ConfigError, UserError
from mailstorm.ledger import Probe, RunAborted, RunPhase
from mailstorm.reports.alerts import alert_report, judge_alerts
from mailstorm.reports.analytics import Analytics, judge_analytics
from mailstorm.reports.analytics import analyze as analyze_analytics
from mailstorm.reports.backups import judge_restores, restores
from mailstorm.reports.campaign import Campaign
from mailstorm.reports.campaign import analyze as analyze_campaigns
from mailstorm.reports.capacity import Capacity, capacity, step_windows
from mailstorm.reports.effects import effects
from mailstorm.reports.failover import failover
from mailstorm.reports.fate import NEVER, OUTCOMES, REJECTED, UNACKED_SQL
from mailstorm.reports.loadcheck import LoadCheck, check_load
from mailstorm.reports.pool import pool_figures
from mailstorm.reports.recovery import Recovery, fault_windows, recoveries
from mailstorm.reports.series import Series, build_series, start_ns
from mailstorm.reports.sizing import Sizing, size
from mailstorm.reports.slo import SloResult, judge
from mailstorm.reports.spec import AlertMatchSpec, ReportSpec, SloSpec
from mailstorm.reports.store import Store, open_run
from mailstorm.runinfo import EspLimits, RunInfo, load_run_info

SCHEMA_VERSION = 1
_NS = 1_000_000_000
CURVE = np.linspace(0, 1, 2001)  # the latency distribution's quantiles the charts draw
E2E = "esp_delivered - intended", f"esp_delivered != {NEVER}"  # ns, over the messages it is known for
SUBMIT = "submit_ok_end - intended", f"submit_ok_end != {NEVER}"


@dataclass
class Analysis:
    run_dir: Path
    slo: SloSpec
    report: ReportSpec
    # The latency distribution at the quantiles CURVE, in ms: "end-to-end" (the ESP's delivery -
    # intended send) and "submission" (end of the first successful attempt - intended); empty if none.
    curves: dict[str, np.ndarray]
    series: Series
    recoveries: list[Recovery]
    capacity: Capacity | None
    sizing: Sizing | None
    slo_results: list[SloResult]
    figures: dict[str, Any]
    load: LoadCheck
    campaigns: list[Campaign]
    analytics: Analytics | None = None

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.slo_results)


def load_slo(run_dir: Path) -> SloSpec:
    path = run_dir / "slo.json"
    if not path.exists():
        return SloSpec()
    try:
        return SloSpec.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {where}: {err['msg']}") from None


def _scenario(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "scenario.yaml"
    if not path.exists():
        return {}
    try:
        scenario = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return {}  # the scenario only informs capacity; a bad copy must not block the other reports
    return scenario if isinstance(scenario, dict) else {}


def _section(run_dir: Path, name: str) -> dict[str, Any] | None:
    section = _scenario(run_dir).get(name)
    return section if isinstance(section, dict) else None


def _alert_match(run_dir: Path) -> AlertMatchSpec | None:
    """The scenario's ``alerts.map`` and ``alerts.grace``; None when it watched no alerts."""
    section = _section(run_dir, "alerts")
    if section is None:
        return None
    try:
        return AlertMatchSpec.model_validate({k: section[k] for k in ("map", "grace") if k in section})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{run_dir / 'scenario.yaml'}: alerts.{where}: {err['msg']}") from None


def _campaign_correlations(scenario: dict[str, Any]) -> dict[str, str]:
    """Each campaign's ``correlation`` as the scenario says (header when it does not)."""
    section = scenario.get("campaign") or []
    section = [section] if isinstance(section, dict) else section
    return {
        str(c["id"]): str(c.get("correlation", "header"))
        for c in section
        if isinstance(c, dict) and "id" in c
    }


def report_spec(info: RunInfo, override: ReportSpec | None) -> ReportSpec:
    if override is not None:
        return override
    raw = info.report
    if raw is None:
        return ReportSpec()
    try:
        return ReportSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"run.json: report.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}") from None


def analyze(run_dir: Path, *, report: ReportSpec | None = None, slo: SloSpec | None = None) -> Analysis:
    run_dir = Path(run_dir)
    ledger = run_dir / "ledger"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not ledger.is_dir():
        raise UserError(f"{run_dir}: no ledger/ directory (is this a mailstorm run directory?)")
    slo = slo or load_slo(run_dir)
    info = load_run_info(run_dir)
    spec = report_spec(info, report)
    with open_run(ledger) as store:
        return _analyze(run_dir, store, slo, info, spec)


def _analyze(run_dir: Path, store: Store, slo: SloSpec, info: RunInfo, spec: ReportSpec) -> Analysis:
    timeline = store.timeline
    t0 = start_ns(store, info.started_ns)
    series = build_series(store, t0)
    counts = outcome_counts(store)
    e2e = store.percentiles(*E2E, scale=1e6, curve=CURVE)
    submit = store.percentiles(*SUBMIT, scale=1e6, curve=CURVE)
    curves = {"end-to-end": e2e.pop("curve"), "submission": submit.pop("curve")}
    e2e, submit = _rounded(e2e), _rounded(submit)

    load_start, load_end = _load_phase(store, t0)
    load_s = max((load_end - load_start) / _NS, 1e-9)
    offered_in_load, delivered_in_load, got, attempts, amplification, rejected_at_stop = store.one(
        f"""SELECT count(*) FILTER (WHERE intended BETWEEN {load_start} AND {load_end}),
                   -- deliveries during the load phase: what the pipeline sustained while loaded (mail
                   -- still draining afterwards was not delivered at that rate)
                   count(*) FILTER (WHERE first_esp BETWEEN {load_start} AND {load_end}),
                   count(*) FILTER (WHERE first_esp != {NEVER}),
                   coalesce(sum(submit_attempts), 0),
                   avg(esp_attempts) FILTER (WHERE esp_attempts > 0),
                   count(*) FILTER (WHERE outcome = {REJECTED} AND stopped) FROM msg"""
    )
    amplification = 1.0 if amplification is None else float(amplification)
    throughput = round(delivered_in_load / load_s, 3) if counts["submitted"] else None
    esp_unmatched = int(store.value("SELECT n FROM unmatched"))

    windows = fault_windows(timeline, t0, len(series))
    recs = recoveries(windows, series, store, slo)
    for r, effect in zip(recs, effects(windows, recs, store, t0, len(series)), strict=True):
        r.no_effect, r.effect = effect.none, effect.as_dict()
    scenario = _scenario(run_dir)
    load_section = scenario.get("load")
    esp_rate = info.esp_limits.rate if info.esp_limits is not None else None
    correlations = _campaign_correlations(scenario)
    campaigns = analyze_campaigns(run_dir, store, correlations, t0, len(series), windows, esp_rate)
    campaign_figures = [c.as_dict() for c in campaigns]
    steps = step_windows(load_section)
    spans = [(r.start_s, r.end_s + (r.time_to_recover_s if r.recovered else 1e12)) for r in recs]
    load_check = check_load(store, load_section, load_s)
    by_sut = load_check.cause == "sut"
    cap = capacity(steps, series, store, slo, faults=spans, drops_by_sut=by_sut) if steps else None
    n_endpoints = info.endpoint_count
    sizing = None
    if spec.sizing is not None:
        sizing = size(
            spec.sizing,
            max_sustainable=cap.max_sustainable if cap else None,
            observed_rate=throughput,
            endpoints=n_endpoints,
            amplification=amplification,
            esp_limits=_esp_limits(spec.sizing.esp_profile, info),
            # Every ESP of the run, unless sizing against another profile (--esp-profile) instead.
            esps_limits=info.esps_limits if spec.sizing.esp_profile is None else None,
            esp_refusals=sum(int(a.sum()) for code, a in series.esp_replies.items() if code.startswith("4")),
        )
    correlation = (load_section or {}).get("correlation", "header")
    aborted = next((r for r in timeline if isinstance(r, RunAborted)), None)
    results = judge(
        slo,
        counts=counts,
        e2e=e2e,
        recover_s=[r.time_to_recover_s for r in recs],
        throughput=throughput,
        planned=load_check.planned,
        dropped=load_check.dropped,
        esp_unmatched=esp_unmatched,
        correlation=correlation if isinstance(correlation, str) else "header",
        no_effect=[r.name for r in recs if r.no_effect],
        aborted=aborted,
        campaigns=campaign_figures,
    )
    backups = restores(store, recs, t0)
    pool = pool_figures(store, t0, len(series))
    results += judge_restores(slo, backups)
    match = _alert_match(run_dir)
    alerts = alert_report(timeline, recs, t0, match) if match is not None else None
    results += judge_alerts(slo, alerts)
    analytics = analyze_analytics(store, t0, windows, len(series))
    results += judge_analytics(slo, analytics)
    reordered = int(series.reordered.sum())
    figures: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "run_id": info.run_id,
            "name": info.name,
            "seed": info.seed,
            "started_ns": t0,
            "dir": str(run_dir),
            "ledger_files": len(store.paths),
            "torn_lines": store.torn_lines,
            "endpoints": n_endpoints,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "verdict": "pass" if all(r.passed for r in results) else "fail",
        "aborted": _aborted(aborted),
        "outcomes": counts,
        "load": load_check.as_dict(),
        "details": {
            "submit_attempts": int(attempts),
            "dropped_by_generator": load_check.dropped,
            "esp_unacked": int(store.value(UNACKED_SQL)),
            "rejected_at_stop": int(rejected_at_stop),
            "esp_unmatched": esp_unmatched,
            "esp_attempts_per_message": round(amplification, 4),
            "reordered": reordered,
            "reordered_pct": round(100.0 * reordered / got, 3) if got else 0.0,
            "esp_replies": {code: int(a.sum()) for code, a in sorted(series.esp_replies.items())},
        },
        "latency_ms": {"e2e": e2e, "submit": submit},
        "throughput": {
            "load_s": round(load_s, 3),
            "offered_rate": round(offered_in_load / load_s, 3),
            "delivered_rate": throughput,
            "peak_backlog": int(series.backlog.max(initial=0)),
        },
        "faults": [r.as_dict() for r in recs],
        "restores": [r.as_dict() for r in backups],
        "pool": pool.as_dict() if pool else None,
        "alerts": alerts.as_dict() if alerts is not None else None,
        "capacity": cap.as_dict() if cap else None,
        "sizing": sizing.as_dict() if sizing else None,
        "campaign": campaign_figures,
        "analytics": analytics.as_dict() if analytics is not None else None,
        "slo": [r.as_dict() for r in results],
        "slo_settings": slo.model_dump(),
        "probes": [
            {"t_s": round((r.t - t0) / _NS, 3), "ok": r.ok, "name": r.name or r.url}
            for r in timeline
            if isinstance(r, Probe)
        ],
        "series": {"t0_ns": t0, **series.as_dict()},
    }
    order = [e.name for e in info.esps if e.name] if info.esps else None
    moved = failover(store, t0, order)  # several ESPs only
    figures["failover"] = moved.as_dict() if moved is not None else None
    return Analysis(
        run_dir,
        slo,
        spec,
        curves,
        series,
        recs,
        cap,
        sizing,
        results,
        figures,
        load_check,
        campaigns,
        analytics,
    )


def outcome_counts(store: Store) -> dict[str, int]:
    """``submitted`` and each outcome's count, as report.json's ``outcomes``."""
    per = dict(store.rows("SELECT outcome, count(*) FROM msg GROUP BY outcome"))
    counts = {"submitted": int(sum(per.values()))}
    counts.update({name: int(per.get(i, 0)) for i, name in enumerate(OUTCOMES)})
    return counts


def _rounded(figures: dict[str, Any]) -> dict[str, float | int | None]:
    return {k: v if k == "count" or v is None else round(float(v), 3) for k, v in figures.items()}


def _esp_limits(profile: str | None, info: RunInfo) -> EspLimits | None:
    """The ESP limits to size against: a named profile's, else the run's (run.json esp_limits)."""
    if profile is None:
        return info.esp_limits
    from mailstorm.fake_esp.profiles import load_profile  # only when asked: the reports need no ESP otherwise

    limits = load_profile(profile).limits.model_dump()
    return EspLimits.model_validate({**limits, "source": f"ESP profile {profile}"})


def _aborted(rec: RunAborted | None) -> dict[str, Any] | None:
    """Where and why an SLO marked abort: true stopped the run (None: it ran its course)."""
    if rec is None:
        return None
    fields = ("slo", "limit", "actual", "after_s", "at_s", "detail")
    return {name: getattr(rec, name) for name in fields}


def _load_phase(store: Store, t0: int) -> tuple[int, int]:
    """The load phase: from run.phase "load" (its t0 field when given) to the next phase, else the span
    of intended send times."""
    start = end = None
    for rec in store.timeline:
        if not isinstance(rec, RunPhase):
            continue
        if rec.phase == "load" and start is None:
            start = rec.t0 or rec.t
        elif start is not None and end is None and rec.phase != "load":
            end = rec.t
    first, last = store.one("SELECT min(intended), max(intended) FROM msg")
    if first is not None:
        start = start if start is not None else int(first)
        end = end if end is not None else int(last)
    return (start or t0), (end or t0)
