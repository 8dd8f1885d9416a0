"""Capacity of step and ramp runs: a table per step, the most it sustains, the knee, and a USL fit.

Steps come from the scenario's load shape (``load.shape`` in ``scenario.yaml``): a ``step`` shape gives
its levels; a ``ramp`` is cut into ten windows (at least 5 s each). The first ``_SETTLE_S`` of each step
(2 s, or a fifth of a short step) is left out so a step is judged in its steady state.

Per step: offered and delivered rates (msg/s), p50/p99 end-to-end latency and error % of the messages
intended in it (rejected, bounced, lost or pending over submitted), and the concurrency inside the
pipeline by Little's law, ``N = X * W`` (throughput times mean end-to-end latency).

- A step is *sustainable* when the pipeline kept up (delivered >= ``KEEP_UP`` x offered: its backlog
  did not grow), lost, bounced, left pending or uncorrelated nothing, met the latency SLOs if any, was
  not generator-bound, and did not overlap a fault window or its recovery (``fault``: such a step measures
  the fault; it is left out of the knee and the USL fit too). The maximum sustainable throughput is
  the highest delivered rate of such a step.
- The *knee* is the step where the delivered-vs-offered curve departs furthest from the straight chord
  through its ends (the Kneedle rule), reported only when it departs by more than 5% of the range.
- The Universal Scalability Law, ``X(N) = lambda N / (1 + sigma (N-1) + kappa N (N-1))``, is fitted by
  least squares (scipy ``curve_fit``) on (N, X) per step, N being Little's-law concurrency. Little's law
  holds in a steady state: past saturation an open-model step's backlog (and so N) keeps growing, so
  there the fit describes the run rather than the SUT's intrinsic curve; R^2 says how well it fits.
  ``N_max = sqrt((1 - sigma) / kappa)`` and ``X_max = X(N_max)``; quality is R^2 and the RMSE in msg/s.
- Little's-law check for the generator: ``L_gen = offered rate x mean (actual start - intended start)``
  is how many messages were waiting inside the load generator. When that exceeds the number inside the
  pipeline (``N``, at least 1), or arrivals were dropped, the generator, not the SUT, was the
  bottleneck: the step is flagged ``generator_bound`` and its figures do not describe the SUT -- unless
  the run's load check (``mailstorm.reports.loadcheck``) found that the SUT's slow answers held every
  connection: then the drops are the SUT's doing, and do not flag the step.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from mailstorm.reports.fate import (
    BOUNCED,
    DELIVERED,
    DUPLICATED,
    LOST,
    NEVER,
    PENDING,
    UNCORRELATED,
)
from mailstorm.reports.series import Series
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import Store, rank

KEEP_UP = 0.95
_NS = 1_000_000_000
_SETTLE_S = 2.0
_KNEE_MIN = 0.05


@dataclass
class Step:
    index: int
    start_s: float
    end_s: float
    offered_rate: float
    throughput: float  # delivered msg/s
    p50_ms: float | None
    p99_ms: float | None
    error_pct: float
    concurrency: float  # Little's law N = X * W
    generator_queue: float  # Little's law L_gen
    generator_bound: bool
    fault: bool  # overlaps a fault window or its recovery
    sustainable: bool


@dataclass
class UslFit:
    sigma: float
    kappa: float
    lam: float
    n_max: float | None
    x_max: float | None
    r2: float
    rmse: float
    points: int


@dataclass
class Capacity:
    shape: str
    steps: list[Step]
    max_sustainable: float | None
    knee_offered: float | None
    knee_throughput: float | None
    usl: UslFit | None
    generator_bound: bool

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.usl is not None:
            d["usl"]["lambda"] = d["usl"].pop("lam")
        return d


def step_windows(load: dict[str, Any] | None) -> tuple[str, list[tuple[float, float]]] | None:
    """The (start_s, end_s) of each step of a step or ramp shape; None for other shapes."""
    if not isinstance(load, dict) or not isinstance(load.get("shape"), dict):
        return None
    shape = load["shape"]
    kind = shape.get("kind")
    duration = float(load.get("duration_s") or 0)
    if kind == "step":
        width, count = float(shape["step_s"]), int(shape["steps"])
        edges = [(i * width, (i + 1) * width) for i in range(count)]
        if duration > edges[-1][1]:
            edges[-1] = (edges[-1][0], duration)  # the last level holds until the end
        return "step", edges
    if kind == "ramp" and duration > 0:
        width = max(duration / 10, 5.0)
        count = max(int(duration // width), 1)
        return "ramp", [(i * width, (i + 1) * width) for i in range(count)]
    return None


def capacity(
    windows: tuple[str, list[tuple[float, float]]],
    series: Series,
    store: Store,
    slo: SloSpec,
    faults: Sequence[tuple[float, float]] = (),
    drops_by_sut: bool = False,
) -> Capacity:
    """The capacity section; ``faults`` are (start_s, end_s) spans (a fault and its recovery): steps
    overlapping one measure the fault, not the capacity, and are left out of the knee and the USL fit.
    ``drops_by_sut``: the load check found the SUT made the generator drop, so drops flag no step.
    Every step's message figures come from ``store``'s ``msg`` table in two queries (counts and sums,
    then the percentiles' ranks), whatever the number of steps."""
    kind, edges = windows
    dropped = np.zeros_like(series.dropped) if drops_by_sut else series.dropped
    spans = [_seconds(a, b, len(series)) for a, b in edges]
    figures = _figures(store, series.t0_ns, spans)
    steps = [
        _step(i, a, b, span, series, fig, slo, faults, dropped)
        for i, ((a, b), span, fig) in enumerate(zip(edges, spans, figures, strict=True))
        if span is not None
    ]
    ok = [s.throughput for s in steps if s.sustainable]
    clean = [s for s in steps if not s.fault]
    knee = _knee(clean)
    return Capacity(
        shape=kind,
        steps=steps,
        max_sustainable=round(max(ok), 3) if ok else None,
        knee_offered=None if knee is None else knee.offered_rate,
        knee_throughput=None if knee is None else knee.throughput,
        usl=fit_usl(np.array([s.concurrency for s in clean]), np.array([s.throughput for s in clean])),
        generator_bound=any(s.generator_bound for s in steps),
    )


def _seconds(a: float, b: float, n: int) -> tuple[int, int] | None:
    """The whole seconds [lo, hi) a step from ``a`` to ``b`` s is judged on (its settling time left
    out); None when none is left of a run of ``n`` seconds."""
    settle = min(_SETTLE_S, (b - a) / 5)
    lo, hi = math.ceil(a + settle), min(math.floor(b), n)
    return None if hi <= lo else (lo, hi)


@dataclass(frozen=True)
class _Figures:
    """One step's messages (those intended in its seconds), as counts and exact sums in ns."""

    submitted: int = 0
    bad: int = 0  # neither delivered nor duplicated: the error %
    harm: int = 0  # lost, bounced, pending or uncorrelated: not sustainable
    delivered: int = 0  # reached the ESP's delivery: the latency sample
    e2e_ns: int = 0  # the sample's summed latency
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    started: int = 0
    waited_ns: int = 0  # summed (actual start - intended start), each clipped at 0


def _figures(store: Store, t0_ns: int, spans: list[tuple[int, int] | None]) -> list[_Figures]:
    """Each span's ``_Figures`` (empty for None): counts and sums in one query over every step, then
    the nearest-rank (numpy's ``inverted_cdf``) p50/p95/p99 of each step's sample in one more (a
    sort, which spills past the store's memory budget where a per-step quantile state would not)."""
    keep = {i: (t0_ns + s[0] * _NS, t0_ns + s[1] * _NS) for i, s in enumerate(spans) if s is not None}
    if not keep:
        return [_Figures() for _ in spans]
    # Steps are disjoint: each message falls in one or none (a CASE beats a range join here).
    step = " ".join(f"WHEN intended >= {lo} AND intended < {hi} THEN {i}" for i, (lo, hi) in keep.items())
    mine = f"""(SELECT CASE {step} END AS i, * FROM msg
                WHERE intended >= {min(lo for lo, _ in keep.values())}
                AND intended < {max(hi for _, hi in keep.values())})"""
    got = f"esp_delivered != {NEVER}"
    found = {
        int(i): [int(x or 0) for x in rest]
        for i, *rest in store.rows(
            f"""SELECT i, count(*),
                    count(*) FILTER (WHERE outcome NOT IN ({DELIVERED}, {DUPLICATED})),
                    count(*) FILTER (WHERE outcome IN ({LOST}, {BOUNCED}, {PENDING}, {UNCORRELATED})),
                    count(*) FILTER (WHERE {got}),
                    sum(esp_delivered - intended) FILTER (WHERE {got}),
                    count(*) FILTER (WHERE first_start != {NEVER}),
                    sum(greatest(first_start - intended, 0)) FILTER (WHERE first_start != {NEVER})
                FROM {mine} WHERE i IS NOT NULL GROUP BY i"""
        )
    }
    qs = (50.0, 95.0, 99.0)
    wanted = sorted({(i, rank(f[3], q)) for i, f in found.items() if f[3] for q in qs})
    at: dict[tuple[int, int], float] = {}
    if wanted:
        ranks = ", ".join(f"({i}, {r})" for i, r in wanted)
        for i, r, v in store.rows(
            f"""SELECT d.i, d.r, d.v FROM (
                    SELECT i, esp_delivered - intended AS v,
                        row_number() OVER (PARTITION BY i ORDER BY esp_delivered - intended) AS r
                    FROM {mine} WHERE i IS NOT NULL AND {got}) AS d
                JOIN (VALUES {ranks}) AS w(i, r) ON d.i = w.i AND d.r = w.r"""
        ):
            at[int(i), int(r)] = int(v) / 1e6  # as numpy divides each ns latency into ms
    out = []
    for i in range(len(spans)):
        if i not in found:
            out.append(_Figures())
            continue
        submitted, bad, harm, delivered, e2e_ns, started, waited_ns = found[i]
        p50, p95, p99 = (at[i, rank(delivered, q)] if delivered else None for q in qs)
        out.append(_Figures(submitted, bad, harm, delivered, e2e_ns, p50, p95, p99, started, waited_ns))
    return out


def _step(
    i: int,
    a: float,
    b: float,
    span: tuple[int, int],
    series: Series,
    fig: _Figures,
    slo: SloSpec,
    faults: Sequence[tuple[float, float]],
    dropped: np.ndarray,
) -> Step:
    lo, hi = span
    secs = hi - lo
    offered = float(series.offered[lo:hi].sum()) / secs
    throughput = float(series.delivered[lo:hi].sum()) / secs
    p50, p95, p99 = fig.p50_ms, fig.p95_ms, fig.p99_ms
    concurrency = throughput * (fig.e2e_ns / 1e6 / fig.delivered / 1e3 if fig.delivered else 0.0)
    gen_queue = offered * (fig.waited_ns / 1e9 / fig.started) if fig.started else 0.0
    gen_bound = bool(dropped[lo:hi].sum() > 0 or gen_queue > max(concurrency, 1.0))
    meets_latency = (slo.p95_e2e_ms is None or (p95 is not None and p95 <= slo.p95_e2e_ms)) and (
        slo.p99_e2e_ms is None or (p99 is not None and p99 <= slo.p99_e2e_ms)
    )
    fault = any(f0 < hi and f1 > lo for f0, f1 in faults)
    sustainable = (
        throughput >= KEEP_UP * offered
        and not fig.harm
        and meets_latency
        and not gen_bound
        and not fault
        and offered > 0
    )
    return Step(
        index=i,
        start_s=round(a, 3),
        end_s=round(b, 3),
        offered_rate=round(offered, 3),
        throughput=round(throughput, 3),
        p50_ms=None if p50 is None else round(p50, 3),
        p99_ms=None if p99 is None else round(p99, 3),
        error_pct=round(100.0 * float(fig.bad) / fig.submitted, 3) if fig.submitted else 0.0,
        concurrency=round(concurrency, 3),
        generator_queue=round(gen_queue, 3),
        generator_bound=gen_bound,
        fault=fault,
        sustainable=bool(sustainable),
    )


def _knee(steps: list[Step]) -> Step | None:
    """Kneedle on (offered, throughput): the point furthest above the chord, if far enough."""
    if len(steps) < 3:
        return None
    x = np.array([s.offered_rate for s in steps])
    y = np.array([s.throughput for s in steps])
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    xn, yn = (x - x.min()) / np.ptp(x), (y - y.min()) / np.ptp(y)
    # Distance above the chord from the first to the last point, in normalised units.
    chord = yn[0] + (yn[-1] - yn[0]) * (xn - xn[0]) / (xn[-1] - xn[0])
    gap = yn - chord
    best = int(np.argmax(gap))
    return steps[best] if gap[best] > _KNEE_MIN else None


def usl(n: np.ndarray, lam: float, sigma: float, kappa: float) -> np.ndarray:
    """The Universal Scalability Law: throughput at concurrency n."""
    return lam * n / (1 + sigma * (n - 1) + kappa * n * (n - 1))


def fit_usl(n: np.ndarray, x: np.ndarray) -> UslFit | None:
    """Least-squares USL fit; None with fewer than 3 distinct usable points or when it fails."""
    keep = (n > 0) & (x > 0) & np.isfinite(n) & np.isfinite(x)
    n, x = n[keep], x[keep]
    if len(np.unique(n)) < 3:
        return None
    i0 = int(np.argmin(n))
    p0 = (x[i0] / n[i0], 0.01, 0.0001)
    try:
        with warnings.catch_warnings():
            # A degenerate covariance (e.g. kappa pinned at 0) still leaves a usable fit; R^2 says how good.
            warnings.simplefilter("ignore", OptimizeWarning)
            (lam, sigma, kappa), _ = curve_fit(
                usl, n, x, p0=p0, bounds=([0, 0, 0], [np.inf, 1, 1]), maxfev=20_000
            )
    except (RuntimeError, ValueError):
        return None
    pred = usl(n, lam, sigma, kappa)
    ss_res = float(((x - pred) ** 2).sum())
    ss_tot = float(((x - x.mean()) ** 2).sum())
    n_max = math.sqrt((1 - sigma) / kappa) if kappa > 1e-12 else None
    x_max = float(usl(np.array(n_max), lam, sigma, kappa)) if n_max is not None else None
    if x_max is None and sigma > 1e-12:
        x_max = lam / sigma  # no coherency cost: throughput approaches lambda / sigma
    return UslFit(
        sigma=round(float(sigma), 6),
        kappa=round(float(kappa), 8),
        lam=round(float(lam), 4),
        n_max=None if n_max is None else round(n_max, 3),
        x_max=None if x_max is None else round(x_max, 3),
        r2=round(1 - ss_res / ss_tot, 5) if ss_tot > 0 else 1.0,
        rmse=round(math.sqrt(ss_res / len(n)), 4),
        points=len(n),
    )
