"""Capacity: a known knee and known USL parameters are recovered from synthetic step runs."""

from __future__ import annotations

import numpy as np
import pytest

from mailstorm.reports.analysis import analyze
from mailstorm.reports.capacity import capacity, fit_usl, step_windows, usl
from mailstorm.reports.store import open_run
from mailstorm.reports.synthetic import synthesize


def _step_shape(start: float, step: float, step_s: float, steps: int) -> dict:
    return {"kind": "step", "start_rate": start, "step_rate": step, "step_s": step_s, "steps": steps}


def test_known_knee_and_max_sustainable(tmp_path):
    """Steps of 100..1000 msg/s into a 600 msg/s relay: knee and max sustainable at 600, later steps not."""
    rates = np.repeat(np.arange(100, 1001, 100), 10)
    synthesize(tmp_path, rates=rates, capacity=600.0, shape=_step_shape(100, 100, 10, 10))
    cap = analyze(tmp_path).figures["capacity"]
    assert cap["shape"] == "step" and len(cap["steps"]) == 10
    assert cap["knee_offered"] == pytest.approx(600, rel=0.02)
    assert cap["max_sustainable"] == pytest.approx(600, rel=0.02)
    assert [s["sustainable"] for s in cap["steps"]] == [True] * 6 + [False] * 4
    assert all(s["throughput"] == pytest.approx(600, rel=0.02) for s in cap["steps"][6:])
    assert not cap["generator_bound"]


def test_known_usl_parameters_recovered(tmp_path):
    """Steps whose throughput and latency follow a USL curve (N = X W) give back its parameters."""
    lam, sigma, kappa = 10.0, 0.05, 0.001
    n = np.array([1, 2, 4, 8, 16, 24, 32, 48, 64], dtype=float)
    x = usl(n, lam, sigma, kappa)
    w_ms = n / x * 1000
    synthesize(
        tmp_path,
        rates=np.repeat(x, 10),
        latency_ms=np.repeat(w_ms, 10),
        capacity=10_000.0,
        shape=_step_shape(1, 1, 10, len(n)),
    )
    fit = analyze(tmp_path).figures["capacity"]["usl"]
    n_max = np.sqrt((1 - sigma) / kappa)
    assert fit["lambda"] == pytest.approx(lam, rel=0.1)
    assert fit["sigma"] == pytest.approx(sigma, rel=0.25)
    assert fit["kappa"] == pytest.approx(kappa, rel=0.25)
    assert fit["n_max"] == pytest.approx(n_max, rel=0.1)
    assert fit["x_max"] == pytest.approx(float(usl(np.array(n_max), lam, sigma, kappa)), rel=0.05)
    assert fit["r2"] > 0.99


def test_usl_fit_on_exact_points():
    """On exact USL points the fit is exact; with fewer than 3 distinct points there is no fit."""
    n = np.array([1, 2, 4, 8, 16, 32, 64], dtype=float)
    fit = fit_usl(n, usl(n, 120.0, 0.02, 0.0005))
    assert fit is not None
    assert (fit.lam, fit.sigma, fit.kappa) == pytest.approx((120.0, 0.02, 0.0005), rel=1e-3)
    assert fit_usl(np.array([1.0, 1.0, 2.0]), np.array([1.0, 1.0, 2.0])) is None


def test_generator_bound_run_is_flagged(tmp_path):
    """A generator starting every send 3 s late holds more than the SUT does: flagged, not sustainable."""
    rates = np.repeat([50, 100, 150], 10)
    synthesize(
        tmp_path, rates=rates, capacity=1000.0, shape=_step_shape(50, 50, 10, 3), generator_lag_ms=3000
    )
    cap = analyze(tmp_path).figures["capacity"]
    assert cap["generator_bound"]
    assert all(s["generator_bound"] and not s["sustainable"] for s in cap["steps"])
    assert cap["max_sustainable"] is None


def test_drops_flag_a_step_generator_bound_unless_the_sut_made_them(tmp_path):
    """Arrivals dropped in a step make it generator-bound, unless the load check found the SUT's slow
    answers held every connection: then the drops are the SUT's, and the step still describes it."""
    rates = np.repeat([50, 100, 150], 10)
    synthesize(tmp_path, rates=rates, capacity=1000.0, shape=_step_shape(50, 50, 10, 3))
    a = analyze(tmp_path)
    a.series.dropped[25] = 40  # the third step
    windows = step_windows({"shape": _step_shape(50, 50, 10, 3), "duration_s": 30})
    with open_run(tmp_path / "ledger") as store:
        by_generator = capacity(windows, a.series, store, a.slo)
        by_sut = capacity(windows, a.series, store, a.slo, drops_by_sut=True)
    assert [s.generator_bound for s in by_generator.steps] == [False, False, True]
    assert [s.generator_bound for s in by_sut.steps] == [False, False, False]


def test_steady_run_has_no_capacity_section(outage_run):
    """A steady run is not a capacity test: capacity is null."""
    run_dir, _ = outage_run
    assert analyze(run_dir).figures["capacity"] is None


def test_steps_during_a_fault_are_not_judged(tmp_path):
    """A step overlapping an outage (or its recovery) is marked fault, and the knee is still found."""
    rates = np.repeat(np.arange(100, 801, 100), 10)
    synthesize(tmp_path, rates=rates, capacity=500.0, outage=(12.0, 15.0), shape=_step_shape(100, 100, 10, 8))
    cap = analyze(tmp_path).figures["capacity"]
    faulted = [s["index"] for s in cap["steps"] if s["fault"]]
    assert faulted == [1]
    assert not cap["steps"][1]["sustainable"]
    assert cap["knee_offered"] == pytest.approx(500, rel=0.02)
    assert cap["max_sustainable"] == pytest.approx(500, rel=0.02)
