"""The report's figures as PNG bytes (matplotlib, headless Agg backend), ready to inline as base64.

One function per figure, each taking the analysis and returning PNG bytes (or None when the run has
nothing to show). Large samples are reduced before plotting (a CDF from 2,000 quantiles, not a million
points) so a million-message run renders in well under a second per figure.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure

from mailstorm.reports.analysis import CURVE, Analysis
from mailstorm.reports.capacity import usl

_INK = "#1f2937"
_GRID = "#e5e7eb"
_COLORS = {
    "offered": "#94a3b8",
    "accepted": "#2563eb",
    "delivered": "#16a34a",
    "backlog": "#d97706",
    "p50": "#0891b2",
    "p95": "#7c3aed",
    "p99": "#db2777",
    "fault": "#ef4444",
    "refused": "#dc2626",
}
COLORS = {**_COLORS, "ink": _INK}  # the page's interactive charts (reports/charts.py) use the same colours
_STYLE = {
    "font.size": 9,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": _INK,
    "axes.titleweight": "bold",
    "axes.titlesize": 10,
    "axes.grid": True,
    "grid.color": _GRID,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "legend.fontsize": 8,
    "xtick.color": _INK,
    "ytick.color": _INK,
}


def _styled(draw: Callable[[Analysis], Figure | None]) -> Callable[[Analysis], bytes | None]:
    """Draw with the report's style (no global state: pyplot is never used) and return PNG bytes."""

    def render(a: Analysis) -> bytes | None:
        with mpl.rc_context(_STYLE):
            fig = draw(a)
            if fig is None:
                return None
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110, facecolor="white")  # layout="tight" already fits it
        return buf.getvalue()

    render.__doc__ = draw.__doc__
    return render


def _head(ax, title: str, ncol: int) -> None:
    """Title on the left, legend on the right, both above the axes so neither hides data."""
    ax.set_title(title, loc="left")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=ncol, borderaxespad=0.2)


def _shade_faults(ax, a: Analysis, label: bool) -> None:
    for i, r in enumerate(a.recoveries):
        ax.axvspan(r.start_s, r.end_s, color=_COLORS["fault"], alpha=0.12, lw=0)
        if r.time_to_recover_s is not None:
            ax.axvline(r.end_s + r.time_to_recover_s, color=_COLORS["delivered"], ls=":", lw=1)
        if label:
            ax.annotate(
                r.name,
                xy=(r.start_s, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(2, -2 - 10 * (i % 2)),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color=_COLORS["fault"],
            )


@_styled
def timeline(a: Analysis) -> Figure:
    """Rates, ESP refusals, backlog and latency percentiles per second, fault windows shaded."""
    s = a.series
    x = np.arange(len(s)) + 0.5  # second i covers [i, i+1): draw it at its middle
    fig = Figure(figsize=(10, 7.2), layout="tight")
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 2]})
    ax = axes[0]
    ax.plot(x, s.offered, color=_COLORS["offered"], lw=1.2, label="offered")
    ax.plot(x, s.sut_accepted, color=_COLORS["accepted"], lw=1.0, label="accepted by SUT")
    ax.plot(x, s.delivered, color=_COLORS["delivered"], lw=1.4, label="delivered (first ESP accept)")
    refused = sum(
        (v for k, v in s.esp_replies.items() if k == "cut" or not k.startswith("2")), np.zeros(len(s))
    )
    edges = np.arange(len(s) + 1)
    if refused.any():
        # One stairs artist, not a bar per second: a long run has thousands of seconds.
        ax.stairs(refused, edges, fill=True, color=_COLORS["refused"], alpha=0.35, label="ESP refusals, cuts")
    failed = [p["t_s"] for p in a.figures["probes"] if not p["ok"]]
    if failed:
        # Where the SUT's own monitoring saw trouble: a rug of marks along the bottom.
        ax.plot(
            failed, [0] * len(failed), ls="none", marker="|", ms=12, mew=2, color=_INK, label="probe failed"
        )
    ax.set_ylabel("messages / s")
    _head(ax, "Throughput", ncol=5)
    _shade_faults(ax, a, label=True)
    ax = axes[1]
    ax.stairs(s.backlog, edges, fill=True, color=_COLORS["backlog"], alpha=0.35)
    ax.stairs(s.backlog, edges, color=_COLORS["backlog"], lw=1.2, label="backlog in the SUT")
    if s.queue_depth is not None:
        ax.plot(x, s.queue_depth, color=_INK, lw=0.8, ls="--", label="SUT queue depth (sampled)")
    ax.set_ylabel("messages")
    _head(ax, "Backlog (accepted, not yet delivered or bounced)", ncol=2)
    _shade_faults(ax, a, label=False)
    ax = axes[2]
    for name, arr in (("p50", s.p50_ms), ("p95", s.p95_ms), ("p99", s.p99_ms)):
        ax.plot(x, arr, color=_COLORS[name], lw=1.1, label=f"e2e {name}")
    if np.isfinite(s.p99_ms).any() and np.nanmax(s.p99_ms) / max(np.nanmin(s.p50_ms), 1e-3) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.set_xlabel("seconds since the run started")
    _head(ax, "End-to-end latency by delivery second", ncol=3)
    _shade_faults(ax, a, label=False)
    if (aborted := a.figures["aborted"]) is not None:
        # Where an SLO marked abort: true stopped the load (seconds from the load's zero, as the axis).
        for ax in axes:
            ax.axvline(aborted["at_s"], color=_INK, lw=1.4, ls="--")
        axes[0].annotate(
            f"stopped: {aborted['slo']}",
            xy=(aborted["at_s"], 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=8,
            color=_INK,
        )
    ax.set_xlim(0, max(len(s), 1))
    return fig


@_styled
def latency_cdf(a: Analysis) -> Figure | None:
    """Cumulative distribution of end-to-end and submission latency (log x)."""
    if not any(len(v) for v in a.curves.values()):
        return None
    fig = Figure(figsize=(10, 3.6), layout="tight")
    ax = fig.subplots()
    for name, color in (("end-to-end", _COLORS["delivered"]), ("submission", _COLORS["accepted"])):
        if len(values := a.curves[name]):
            ax.plot(np.maximum(values, 1e-3), CURVE * 100, color=color, lw=1.6, label=name)
    for p in (50, 95, 99):
        ax.axhline(p, color="#9ca3af", lw=0.6, ls=":")
        ax.annotate(f"p{p}", xy=(1.0, p), xycoords=("axes fraction", "data"), fontsize=7, color="#6b7280")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("% of messages")
    ax.set_ylim(0, 100.5)
    ax.set_title("Latency distribution")
    ax.legend(loc="lower right")
    return fig


@_styled
def capacity_curve(a: Analysis) -> Figure | None:
    """Delivered vs offered per step (knee marked) and throughput vs concurrency with the USL fit."""
    cap = a.capacity
    if cap is None or not cap.steps:
        return None
    fig = Figure(figsize=(10, 3.8), layout="tight")
    ax1, ax2 = fig.subplots(1, 2)
    off = np.array([s.offered_rate for s in cap.steps])
    thr = np.array([s.throughput for s in cap.steps])
    ok = np.array([s.sustainable for s in cap.steps])
    hit = np.array([s.fault for s in cap.steps])
    top = max(off.max(), thr.max()) * 1.05
    ax1.plot([0, top], [0, top], color="#9ca3af", lw=0.8, ls="--", label="delivered = offered")
    ax1.plot(off, thr, color=_COLORS["accepted"], lw=1.2)
    ax1.scatter(off[ok], thr[ok], color=_COLORS["delivered"], zorder=3, label="sustainable step")
    ax1.scatter(off[~ok & ~hit], thr[~ok & ~hit], color=_COLORS["refused"], zorder=3, label="not sustainable")
    if hit.any():
        ax1.scatter(off[hit], thr[hit], color="#9ca3af", zorder=3, label="during a fault (not judged)")
    if cap.knee_offered is not None:
        ax1.axvline(cap.knee_offered, color=_COLORS["backlog"], lw=1, ls=":")
        ax1.annotate("knee", xy=(cap.knee_offered, top * 0.05), color=_COLORS["backlog"], fontsize=8)
    ax1.set_xlabel("offered (msg/s)")
    ax1.set_ylabel("delivered (msg/s)")
    ax1.set_title("Capacity per step")
    ax1.legend(loc="upper left")
    n = np.array([s.concurrency for s in cap.steps])[~hit]
    ax2.scatter(n, thr[~hit], color=_COLORS["accepted"], zorder=3, label="measured")
    if cap.usl is not None:
        u = cap.usl
        lo, hi = max(n.min(), 1e-3) * 0.5, max(n.max(), u.n_max or 0) * 1.1
        grid = np.geomspace(lo, hi, 300) if hi / lo > 50 else np.linspace(lo, hi, 300)
        ax2.plot(grid, usl(grid, u.lam, u.sigma, u.kappa), color=_COLORS["p95"], lw=1.4,
                 label=f"USL fit (R\u00b2 {u.r2:.3f})")  # fmt: skip
        if u.n_max is not None and u.x_max is not None:
            ax2.scatter([u.n_max], [u.x_max], marker="*", s=120, color=_COLORS["p99"], zorder=4,
                        label=f"X_max {u.x_max:,.0f} at N {u.n_max:,.1f}")  # fmt: skip
    if len(n) and n.min() > 0 and n.max() / n.min() > 50:
        ax2.set_xscale("log")  # saturated open-model steps push N up by orders of magnitude
    ax2.set_xlabel("concurrency N (Little's law: X \u00b7 W)")
    ax2.set_ylabel("throughput X (msg/s)")
    ax2.set_title("Universal Scalability Law")
    ax2.legend(loc="lower right")
    return fig


@_styled
def campaign(a: Analysis) -> Figure | None:
    """Each campaign's subscribers first delivered per second, with the ESP's refusals and the fault
    windows on the same seconds."""
    if not a.campaigns:
        return None
    s = a.series
    n = max(len(s), *(len(c.delivered_per_s) for c in a.campaigns), 1)
    edges = np.arange(n + 1)
    fig = Figure(figsize=(10, 3.2), layout="tight")
    ax = fig.subplots()
    for c in a.campaigns:
        per_s = np.zeros(n)
        per_s[: len(c.delivered_per_s)] = c.delivered_per_s
        ax.stairs(per_s, edges, lw=1.4, label=f"{c.id}: delivered")
    refused = np.zeros(n)
    for k, v in s.esp_replies.items():
        if k == "cut" or not k.startswith("2"):
            refused[: len(v)] += v
    if refused.any():
        ax.stairs(refused, edges, fill=True, color=_COLORS["refused"], alpha=0.35, label="ESP refusals, cuts")
    ax.set_ylabel("recipients / s")
    ax.set_xlabel("seconds since the run started")
    _head(ax, "Campaign: first deliveries per second", ncol=3)
    _shade_faults(ax, a, label=True)
    ax.set_xlim(0, n)
    return fig
