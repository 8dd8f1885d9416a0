"""The report page's interactive charts: the analysis as chart specs (plain JSON), and the scripts that
draw them, for report.html to embed (the PNGs of reports/plots.py stay for report.md and plots/).

The page draws with uPlot (v1.6.32, MIT, vendored in ``templates/vendor``: ~51 KB minified, canvas, no
dependencies) through ``templates/charts.js``, which turns each spec into a chart: hover shows every
series' value at the cursor in the legend, dragging across a chart zooms its x axis (the three timeline
panels zoom and hover together; double-click resets), a click on a legend entry hides or shows that
series. Nothing is fetched: the data, uPlot and its CSS are all inline.

A spec: ``{id, title, height, x: {label, name, unit, log}, y: {label, unit, log}, series: [{label,
color, kind, dash}], data: [x, y1, ...], bands: [{label, start, end}], marks: [{label, at}]}`` with
``kind`` one of line, points, area (stepped, filled); ``data`` columns aligned on ``x`` (None where a
series has no value: a gap in the timeline; in a ``joined`` chart, whose series have x values of their
own, lines run across it). A run longer than ``MAX_POINTS`` seconds is reduced to buckets of k seconds:
rates are the bucket's mean, backlog and latency its maximum (so a spike still shows), and the page says
so.
"""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from mailstorm.reports.analysis import CURVE, Analysis
from mailstorm.reports.capacity import usl
from mailstorm.reports.plots import COLORS

MAX_POINTS = 4000
VENDOR = Path(__file__).parent / "templates" / "vendor"
CHARTS_JS = Path(__file__).parent / "templates" / "charts.js"
UPLOT_VERSION = "1.6.32"


def _col(a: np.ndarray, digits: int) -> list[float | int | None]:
    """A column for JSON: NaN -> None, rounded (a 1-hour run's page stays small), ints as ints."""
    if a.dtype.kind in "iub":
        return a.tolist()
    out: list[float | int | None] = []
    for v in a.tolist():
        if v is None or math.isnan(v):
            out.append(None)
        else:
            r = round(v, digits)
            out.append(int(r) if r == int(r) else r)
    return out


def _buckets(a: np.ndarray, k: int, how: str) -> np.ndarray:
    """``a`` reduced to buckets of ``k`` (the last may be short): mean or max, NaN-aware."""
    if k == 1:
        return a
    pad = (-len(a)) % k
    b = np.concatenate([a.astype(float), np.full(pad, np.nan)]).reshape(-1, k)
    seen = ~np.isnan(b)
    n = seen.sum(axis=1)
    if how == "max":
        top = np.where(seen, b, -np.inf).max(axis=1)
        return np.where(n > 0, top, np.nan)  # an all-NaN bucket (no delivery in it) stays NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(seen, b, 0.0).sum(axis=1) / n, np.nan)


def _series(label: str, color: str, kind: str = "line", dash: bool = False) -> dict[str, Any]:
    return {"label": label, "color": color, "kind": kind, "dash": dash}


def timeline(a: Analysis) -> list[dict[str, Any]]:
    """Three panels on one x axis (seconds since the run started): throughput, backlog, latency."""
    s = a.series
    n = len(s)
    k = max(1, math.ceil(n / MAX_POINTS))
    x = (np.arange(0, n, k)).astype(float)
    note = f"each point: {k} s (rates averaged; backlog and latency: the bucket's maximum)" if k > 1 else ""
    bands = [{"label": r.name, "start": r.start_s, "end": r.end_s} for r in a.recoveries]
    marks = [
        {"label": f"{r.name} recovered", "at": r.end_s + r.time_to_recover_s}
        for r in a.recoveries
        if r.time_to_recover_s is not None
    ]

    def mean(arr: np.ndarray, digits: int = 2) -> list:
        return _col(_buckets(arr, k, "mean"), digits)

    def top(arr: np.ndarray, digits: int = 1) -> list:
        return _col(_buckets(arr, k, "max"), digits)

    xs = _col(x, 0)
    rate = [_series("offered", COLORS["offered"]), _series("accepted by SUT", COLORS["accepted"]),
            _series("delivered (first ESP accept)", COLORS["delivered"])]  # fmt: skip
    rate_data = [xs, mean(s.offered), mean(s.sut_accepted), mean(s.delivered)]
    refused = sum((v for c, v in s.esp_replies.items() if c == "cut" or not c.startswith("2")), np.zeros(n))
    if refused.any():
        rate.append(_series("ESP refusals, cuts", COLORS["refused"], "area"))
        rate_data.append(mean(refused))
    failed = np.zeros(n)
    for p in a.figures["probes"]:
        if not p["ok"] and 0 <= p["t_s"] < n:
            failed[int(p["t_s"])] += 1
    if failed.any():
        rate.append(_series("probe failed (at 0)", COLORS["ink"], "points"))
        rate_data.append([0 if v else None for v in _buckets(failed, k, "max")])
    backlog = [_series("backlog in the SUT", COLORS["backlog"], "area")]
    backlog_data = [xs, top(s.backlog, 0)]
    if s.queue_depth is not None:
        backlog.append(_series("SUT queue depth (sampled)", COLORS["ink"], dash=True))
        backlog_data.append(top(s.queue_depth, 0))
    lat = [_series(f"e2e {p}", COLORS[p]) for p in ("p50", "p95", "p99")]
    lat_data = [xs, top(s.p50_ms), top(s.p95_ms), top(s.p99_ms)]
    spread = np.isfinite(s.p99_ms).any() and np.nanmax(s.p99_ms) / max(np.nanmin(s.p50_ms), 1e-3) > 50
    x_axis = {"label": "seconds since the run started", "name": "second", "unit": "", "log": False}
    common = {"x": x_axis, "bands": bands, "marks": marks, "note": note, "sync": "timeline"}
    return [
        {**common, "id": "throughput", "title": "Throughput", "series": rate, "data": rate_data,
         "y": {"label": "messages / s", "unit": "msg/s", "log": False}, "height": 260},
        {**common, "id": "backlog", "title": "Backlog (accepted, not yet delivered or bounced)",
         "series": backlog, "data": backlog_data, "y": {"label": "messages", "unit": "", "log": False},
         "height": 180},
        {**common, "id": "latency", "title": "End-to-end latency by delivery second", "series": lat,
         "data": lat_data, "y": {"label": "ms", "unit": "ms", "log": bool(spread)}, "height": 200},
    ]  # fmt: skip


def _join(columns: list[tuple[np.ndarray, np.ndarray]], digits: int) -> list[list]:
    """Series with x values of their own on one sorted x column (None where a series has no point;
    of two equal x in one series, the last y)."""
    xs = np.unique(np.concatenate([np.round(x, digits) for x, _ in columns])) if columns else np.array([])
    out: list[list] = [_col(xs, digits)]
    for x, y in columns:
        col: list[Any] = [None] * len(xs)
        for i, v in zip(np.searchsorted(xs, np.round(x, digits)).tolist(), y.tolist(), strict=True):
            col[i] = None if v is None or (isinstance(v, float) and math.isnan(v)) else round(v, 3)
        out.append(col)
    return out


def _joined(cid: str, title: str, series: list, cols: list, **spec: Any) -> dict[str, Any]:
    """A chart whose series have x values of their own (points, fitted curves), joined on one x."""
    return {"id": cid, "title": title, "series": series, "data": _join(cols, 3), "joined": True,
            "height": 270, "marks": [], **spec}  # fmt: skip


def latency_cdf(a: Analysis) -> dict[str, Any] | None:
    """The share of messages at or under each latency, end-to-end and submission (log x)."""
    q = CURVE[::2]  # 1,001 points are plenty for the page
    series, cols = [], []
    for name, color in (("end-to-end", COLORS["delivered"]), ("submission", COLORS["accepted"])):
        if len(values := a.curves[name]):
            series.append(_series(name, color))
            cols.append((np.maximum(values[::2], 1e-3), q * 100))
    if not cols:
        return None
    return _joined(
        "cdf", "Latency distribution", series, cols,
        x={"label": "latency (ms, log scale)", "name": "latency", "unit": "ms", "log": True},
        y={"label": "% of messages", "unit": "%", "log": False},
    )  # fmt: skip


def capacity(a: Analysis) -> list[dict[str, Any]]:
    """Delivered against offered per step, and throughput against concurrency with the USL fit."""
    cap = a.capacity
    if cap is None or not cap.steps:
        return []
    off = np.array([s.offered_rate for s in cap.steps], dtype=float)
    thr = np.array([s.throughput for s in cap.steps], dtype=float)
    ok = np.array([s.sustainable for s in cap.steps])
    hit = np.array([s.fault for s in cap.steps])
    top = float(max(off.max(), thr.max()) * 1.05)
    steps = [_series("delivered = offered", "#9ca3af", dash=True)]
    cols = [(np.array([0.0, top]), np.array([0.0, top]))]
    for label, mask, color in (
        ("sustainable step", ok, COLORS["delivered"]),
        ("not sustainable", ~ok & ~hit, COLORS["refused"]),
        ("during a fault (not judged)", hit, "#9ca3af"),
    ):
        if mask.any():
            steps.append(_series(label, color, "points"))
            cols.append((off[mask], thr[mask]))
    marks = [{"label": "knee", "at": cap.knee_offered}] if cap.knee_offered is not None else []
    out = [
        _joined(
            "capacity-steps", "Capacity per step", steps, cols,
            x={"label": "offered (msg/s)", "name": "offered", "unit": "msg/s", "log": False},
            y={"label": "delivered (msg/s)", "unit": "msg/s", "log": False}, marks=marks,
        )
    ]  # fmt: skip
    n = np.array([s.concurrency for s in cap.steps], dtype=float)[~hit]
    if len(n):
        series = [_series("measured", COLORS["accepted"], "points")]
        cols = [(n, thr[~hit])]
        if cap.usl is not None:
            u = cap.usl
            lo, hi = max(n.min(), 1e-3) * 0.5, max(n.max(), u.n_max or 0) * 1.1
            grid = np.geomspace(lo, hi, 200) if hi / lo > 50 else np.linspace(lo, hi, 200)
            series.append(_series(f"USL fit (R\u00b2 {u.r2:.3f})", COLORS["p95"]))
            cols.append((grid, usl(grid, u.lam, u.sigma, u.kappa)))
        log = bool(n.min() > 0 and n.max() / n.min() > 50)
        out.append(
            _joined(
                "capacity-usl", "Universal Scalability Law", series, cols,
                x={"label": "concurrency N (Little's law: X \u00b7 W)", "name": "N", "unit": "", "log": log},
                y={"label": "throughput X (msg/s)", "unit": "msg/s", "log": False},
            )
        )  # fmt: skip
    return out


def specs(a: Analysis) -> dict[str, Any]:
    """Every chart of the page by section: timeline panels, latency CDF (or None), capacity charts."""
    return {"timeline": timeline(a), "cdf": latency_cdf(a), "capacity": capacity(a)}


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script type="application/json">``: no ``</script>``, no ``<!--``
    (fault names are the user's text)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def assets() -> dict[str, str]:
    """uPlot's script and style, its license (MIT asks for it in every copy) and the page's charts.js."""
    return {
        "uplot_js": (VENDOR / "uPlot.iife.min.js").read_text(encoding="utf-8"),
        "uplot_css": (VENDOR / "uPlot.min.css").read_text(encoding="utf-8"),
        "uplot_license": (VENDOR / "uPlot.LICENSE").read_text(encoding="utf-8"),
        "charts_js": CHARTS_JS.read_text(encoding="utf-8"),
        "uplot_version": UPLOT_VERSION,
    }
