"""One run directory -> every figure the reports show (pure: reads files, writes nothing).

Reads ``slo.json`` (``SloSpec``; ``SloSpec()`` when absent), ``run.json`` (``mailstorm.runinfo.RunInfo``:
``run_id``, ``name``, ``seed``, ``started_ns``, ``endpoints``, ``esp_limits``, ``report`` (a
``ReportSpec``)), ``scenario.yaml`` (only its ``load`` section: the shape, for capacity; max_connections,
max_lag_s and correlation, for the load and correlation checks) and ``ledger/*.jsonl``, and assembles
``Analysis``: the figures as one JSON-ready dict (``figures``, the shape of ``report.json``) plus the arrays
the plots use.
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
from mailstorm.ledger import Probe, Record, RunAborted, RunPhase, RunStarted
from mailstorm.reports.alerts import alert_report, judge_alerts
from mailstorm.reports.analytics import Analytics, judge_analytics
from mailstorm.reports.analytics import analyze as analyze_analytics
from mailstorm.reports.backups import judge_restores, restores
from mailstorm.reports.campaign import Campaign
from mailstorm.reports.campaign import analyze as analyze_campaigns
from mailstorm.reports.capacity import Capacity, capacity, step_windows
from mailstorm.reports.effects import effects
from mailstorm.reports.failover import failover
from mailstorm.reports.fate import NEVER, Messages, classify
from mailstorm.reports.ingest import read_columns
from mailstorm.reports.loadcheck import LoadCheck, check_load
from mailstorm.reports.pool import pool_figures
from mailstorm.reports.recovery import Recovery, fault_windows, recoveries
from mailstorm.reports.series import Series, build_series, start_ns
from mailstorm.reports.sizing import Sizing, size
from mailstorm.reports.slo import SloResult, judge
from mailstorm.reports.spec import AlertMatchSpec, ReportSpec, SloSpec
from mailstorm.runinfo import EspLimits, RunInfo, load_run_info

SCHEMA_VERSION = 1
_NS = 1_000_000_000
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99_9": 99.9}


@dataclass
class Analysis:
    run_dir: Path
    slo: SloSpec
    report: ReportSpec
    msgs: Messages
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
    cols = read_columns(ledger)
    msgs = classify(cols)
    # The run's zero: the timeline's run.started, else run.json's started_ns, else the first intended send.
    has_start = any(isinstance(r, RunStarted) for r in cols.timeline)
    t0 = start_ns(cols, msgs) if has_start else info.started_ns or start_ns(cols, msgs)
    series = build_series(cols, msgs, t0)
    counts = msgs.counts()
    e2e = percentiles(msgs.e2e_ms())
    submit = percentiles(msgs.submit_ms())

    load_start, load_end = _load_phase(cols.timeline, msgs, t0)
    load_s = max((load_end - load_start) / _NS, 1e-9)
    in_load = (msgs.intended >= load_start) & (msgs.intended <= load_end)
    # Deliveries that happened during the load phase: what the pipeline sustained while loaded (mail
    # still draining afterwards was not delivered at that rate).
    delivered_in_load = int(((msgs.first_esp >= load_start) & (msgs.first_esp <= load_end)).sum())
    throughput = round(delivered_in_load / load_s, 3) if counts["submitted"] else None

    windows = fault_windows(cols.timeline, t0, len(series))
    recs = recoveries(windows, series, msgs, cols.timeline, slo)
    for r, effect in zip(recs, effects(windows, recs, cols, t0, len(series)), strict=True):
        r.no_effect, r.effect = effect.none, effect.as_dict()
    scenario = _scenario(run_dir)
    load_section = scenario.get("load")
    esp_rate = info.esp_limits.rate if info.esp_limits is not None else None
    correlations = _campaign_correlations(scenario)
    campaigns = analyze_campaigns(run_dir, correlations, t0, len(series), windows, esp_rate)
    campaign_figures = [c.as_dict() for c in campaigns]
    steps = step_windows(load_section)
    spans = [(r.start_s, r.end_s + (r.time_to_recover_s if r.recovered else 1e12)) for r in recs]
    load_check = check_load(cols, msgs, load_section, load_s)
    by_sut = load_check.cause == "sut"
    cap = capacity(steps, series, msgs, slo, faults=spans, drops_by_sut=by_sut) if steps else None
    reached = msgs.esp_attempts > 0
    amplification = float(msgs.esp_attempts[reached].mean()) if reached.any() else 1.0
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
    aborted = next((r for r in cols.timeline if isinstance(r, RunAborted)), None)
    results = judge(
        slo,
        counts=counts,
        e2e=e2e,
        recover_s=[r.time_to_recover_s for r in recs],
        throughput=throughput,
        planned=load_check.planned,
        dropped=load_check.dropped,
        esp_unmatched=msgs.esp_unmatched,
        correlation=correlation if isinstance(correlation, str) else "header",
        no_effect=[r.name for r in recs if r.no_effect],
        aborted=aborted,
        campaigns=campaign_figures,
    )
    backups = restores(cols, msgs, recs, t0)
    pool = pool_figures(ledger, cols, msgs, t0, len(series))
    results += judge_restores(slo, backups)
    match = _alert_match(run_dir)
    alerts = alert_report(cols.timeline, recs, t0, match) if match is not None else None
    results += judge_alerts(slo, alerts)
    analytics = analyze_analytics(ledger, t0, windows, len(series))
    results += judge_analytics(slo, analytics)
    reordered = int(series.reordered.sum())
    got = int((msgs.first_esp != NEVER).sum())
    figures: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run": {
            "run_id": info.run_id,
            "name": info.name,
            "seed": info.seed,
            "started_ns": t0,
            "dir": str(run_dir),
            "ledger_files": cols.files,
            "torn_lines": cols.torn_lines,
            "endpoints": n_endpoints,
            "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "verdict": "pass" if all(r.passed for r in results) else "fail",
        "aborted": _aborted(aborted),
        "outcomes": counts,
        "load": load_check.as_dict(),
        "details": {
            "submit_attempts": int(msgs.submit_attempts.sum()),
            "dropped_by_generator": load_check.dropped,
            "esp_unacked": msgs.unacked,
            "rejected_at_stop": msgs.rejected_at_stop,
            "esp_unmatched": msgs.esp_unmatched,
            "esp_attempts_per_message": round(amplification, 4),
            "reordered": reordered,
            "reordered_pct": round(100.0 * reordered / got, 3) if got else 0.0,
            "esp_replies": {code: int(a.sum()) for code, a in sorted(series.esp_replies.items())},
        },
        "latency_ms": {"e2e": e2e, "submit": submit},
        "throughput": {
            "load_s": round(load_s, 3),
            "offered_rate": round(int(in_load.sum()) / load_s, 3),
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
            for r in cols.timeline
            if isinstance(r, Probe)
        ],
        "series": {"t0_ns": t0, **series.as_dict()},
    }
    order = [e.name for e in info.esps if e.name] if info.esps else None
    moved = failover(cols, t0, order)  # several ESPs only
    figures["failover"] = moved.as_dict() if moved is not None else None
    return Analysis(
        run_dir,
        slo,
        spec,
        msgs,
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


def percentiles(values_ms: np.ndarray) -> dict[str, float | int | None]:
    """p50..p99.9, max, mean and count of a latency sample: exact nearest-rank values over every message
    (no histogram needed at this scale); None when empty."""
    if len(values_ms) == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None, "count": 0}
    qs = np.percentile(values_ms, list(PERCENTILES.values()), method="inverted_cdf")
    out: dict[str, float | int | None] = {k: round(float(q), 3) for k, q in zip(PERCENTILES, qs, strict=True)}
    out["max"] = round(float(values_ms.max()), 3)
    out["mean"] = round(float(values_ms.mean()), 3)
    out["count"] = len(values_ms)
    return out


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


def _load_phase(timeline: list[Record], msgs: Messages, t0: int) -> tuple[int, int]:
    """The load phase: from run.phase "load" (its t0 field when given) to the next phase, else the span
    of intended send times."""
    start = end = None
    for rec in timeline:
        if not isinstance(rec, RunPhase):
            continue
        if rec.phase == "load" and start is None:
            start = rec.t0 or rec.t
        elif start is not None and end is None and rec.phase != "load":
            end = rec.t
    if len(msgs.intended):
        start = start if start is not None else int(msgs.intended.min())
        end = end if end is not None else int(msgs.intended.max())
    return (start or t0), (end or t0)
