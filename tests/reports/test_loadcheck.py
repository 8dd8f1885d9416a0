"""The load check: planned, offered and dropped arrivals from the load ledger, who could not keep up
(the generator, busy itself, or the SUT, whose slow answers held every connection), and max_dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mailstorm.ledger import LedgerWriter, LoadDropped, LoadFinished, LoadStarted
from mailstorm.reports import render
from mailstorm.reports.analysis import analyze
from mailstorm.reports.loadcheck import check_load
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import open_run
from tests.records import accepted, submit

NS = 1_000_000_000
T0 = 1_800_000_000 * NS


def _run(
    tmp_path: Path,
    *,
    planned: int | None = 100,
    sent: int = 60,
    dropped: int = 40,
    submit_ms: float = 5.0,
    gap_ms: float = 0.0,
    senders: int = 2,
    cpu: float = 0.2,
    lag_ms: float = 0.5,
    finished: bool = True,
    stall: bool = False,
    slo: SloSpec | None = None,
) -> Path:
    """A 10 s schedule: ``sent`` submissions on ``senders`` connections (each taking ``submit_ms``, then
    ``gap_ms`` idle), ``dropped`` arrivals intended 1 s in, and the load process's own load.started /
    load.finished (``finished=False``: a ledger from before load.finished and the drops' loop_lag_ms).
    ``stall``: the SUT answers nothing from 0.5 s to 8 s, holding one submission per connection."""
    run_dir = tmp_path / "run"
    with LedgerWriter(run_dir / "ledger", "load-0") as load, LedgerWriter(run_dir / "ledger", "esp") as esp:
        load.write(LoadStarted(worker=0, t0=T0, planned=planned, shape="steady"))
        took = int(submit_ms * 1e6)
        if stall:
            sent = senders
            for i in range(senders):
                load.write(submit(f"m-{i}", intended=T0 + NS // 2, start=T0 + NS // 2, end=T0 + 8 * NS))
        for i in range(0 if stall else sent):
            start = T0 + (i // senders) * (took + int(gap_ms * 1e6))
            intended = T0 + i * (10 * NS // max(sent, 1))
            load.write(submit(f"m-{i}", intended=min(intended, start), start=start, end=start + took))
            esp.write(accepted(f"m-{i}"), t=start + took + NS // 100)
        if dropped:
            lag = {"loop_lag_ms": lag_ms} if finished else {}
            load.write(LoadDropped(intended=T0 + NS, count=dropped, worker=0, **lag))
        if finished:
            busy = {"cpu_s": 10 * cpu, "wall_s": 10.0, "loop_lag_ms": lag_ms, "loop_lag_max_ms": 3 * lag_ms}
            load.write(LoadFinished(worker=0, submitted=sent, dropped=dropped, connections=senders, **busy))
        else:  # an older ledger: the connections come from the scenario
            (run_dir / "scenario.yaml").write_text(f"load: {{max_connections: {senders}}}\n")
    (run_dir / "slo.json").write_text((slo or SloSpec()).model_dump_json())
    return run_dir


def test_planned_offered_dropped_add_up_and_max_dropped_fails_past_one_percent(tmp_path):
    """Planned comes from load.started, offered from the submissions, dropped from load.dropped; 40 of
    100 dropped is past the default max_dropped (1% of planned), and the headline says the numbers."""
    a = analyze(_run(tmp_path))
    load = a.figures["load"]
    assert (load["planned"], load["offered"], load["dropped"], load["dropped_pct"]) == (100, 60, 40, 40.0)
    judged = {r.name: r for r in a.slo_results}
    assert (judged["max_dropped"].target, judged["max_dropped"].actual, judged["max_dropped"].passed) == (
        1.0,
        40,
        False,
    )
    assert "40 of 100 planned arrivals (40.00%), limit 1% of them (1)" in judged["max_dropped"].detail
    assert a.figures["verdict"] == "fail" and a.figures["details"]["dropped_by_generator"] == 40
    assert "Load: 60 of 100 planned arrivals offered, 40 dropped (40.00%)" in render.headline(a)


@pytest.mark.parametrize(
    ("setting", "cause", "says"),
    [
        ({"cpu": 0.95}, "generator", "a load process used 95% of a CPU"),
        ({"lag_ms": 25.0}, "generator", "its event loop ran 25.0 ms late when it dropped arrivals"),
        ({"lag_ms": 25.0, "finished": False}, "generator", "connections were not all busy"),
        ({"stall": True}, "sut", "2.0 of 2 connections were busy waiting on it while arrivals were dropped"),
        ({"stall": True}, "sut", "the SUT answered none of them in the meantime"),
        ({"submit_ms": 100.0}, "sut", "submissions took 100.0 ms each then (Little's law)"),
        ({"submit_ms": 100.0, "finished": False}, "sut", "2 connections carried at most ~20 msg/s"),
        (
            {"submit_ms": 5.0, "gap_ms": 95.0},
            "generator",
            "its connections were not all busy, yet arrivals were not started in time",
        ),
    ],
)
def test_who_could_not_keep_up(tmp_path, setting, cause, says):
    """A load process busy on its CPU, or whose event loop ran late when it dropped, is the generator's
    fault; every connection busy waiting on the SUT while arrivals were dropped is the SUT's: a stalled
    SUT (no answer at all), or a slow one, whose pace is said (Little's law: 100 ms per submission on 2
    connections, 20 msg/s); connections mostly idle and a generator with time to spare (or no figures
    of its own, an older ledger) that still started arrivals late: the generator's again."""
    load = analyze(_run(tmp_path, **setting)).figures["load"]
    assert load["cause"] == cause and says in load["detail"], load["detail"]


def test_nothing_dropped_nothing_to_explain_and_max_dropped_holds(tmp_path):
    """A load that offered everything it planned passes max_dropped and names no culprit."""
    a = analyze(_run(tmp_path, sent=100, dropped=0))
    assert a.figures["load"]["cause"] is None and a.figures["load"]["detail"] is None
    assert {r.name: r.passed for r in a.slo_results}["max_dropped"] is True
    assert render.headline(a).endswith("Load: 100 of 100 planned arrivals offered, 0 dropped.")


def test_without_load_started_planned_is_offered_plus_dropped(tmp_path):
    """A closed model (planned null) or an older ledger: planned is what was offered plus dropped."""
    load = analyze(_run(tmp_path, planned=None)).figures["load"]
    assert (load["planned"], load["offered"], load["dropped"]) == (100, 60, 40)


@pytest.mark.parametrize(
    ("value", "parsed", "limit"),
    [("1%", "1%", 10.0), ("0.5 %", "0.5%", 5.0), (5, 5, 5.0), ("7", 7, 7.0), ("100%", "100%", 1000.0)],
)
def test_max_dropped_is_a_count_or_a_share_of_planned(value, parsed, limit):
    spec = SloSpec(max_dropped=value)
    assert spec.max_dropped == parsed and spec.dropped_limit(1000) == limit
    assert SloSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize("value", ["many", "150%", "-1%", -1, "nan%", 1.5, "%"])
def test_a_bad_max_dropped_names_itself(value):
    with pytest.raises(ValidationError, match="max_dropped"):
        SloSpec(max_dropped=value)


def test_in_flight_is_measured_over_the_union_of_the_drop_windows(tmp_path):
    """Drop windows ([intended, intended + max_lag_s]) that overlap or repeat count once: one sender
    busy all along with 100 ms submissions, a second only from 1.5 s to 2 s, drops at 1 s (twice),
    1.5 s and 5 s: the windows are [1, 2.5] and [5, 6] s, with 1.5 + 0.5 + 1 submission-seconds in
    flight over 2.5 s (1.2 connections busy; each window apart would give 1.375), and 30 answers in
    them (a submission ending at a window's start counts, one ending at its end does not): 100 ms each
    by Little's law."""
    ledger = tmp_path / "ledger"
    took = NS // 10
    with LedgerWriter(ledger, "load-0") as load:
        load.write(LoadStarted(worker=0, t0=T0, planned=200, shape="steady"))
        spans = [(f"a-{i}", T0 + i * took) for i in range(100)]
        spans += [(f"b-{i}", T0 + 3 * NS // 2 + i * took) for i in range(5)]
        for mid, start in spans:
            load.write(submit(mid, intended=start, start=start, end=start + took))
        for at in (T0 + NS, T0 + NS, T0 + 3 * NS // 2, T0 + 5 * NS):
            load.write(LoadDropped(intended=at, count=1, worker=0, loop_lag_ms=0.5))
        busy = {"cpu_s": 1.0, "wall_s": 10.0, "loop_lag_ms": 0.5, "loop_lag_max_ms": 1.5}
        load.write(LoadFinished(worker=0, submitted=len(spans), dropped=4, connections=2, **busy))
    with open_run(ledger) as store:
        check = check_load(store, {"max_connections": 2, "max_lag_s": 1.0}, 10.0)
    assert (check.offered, check.dropped, check.connections) == (105, 4, 2)
    assert check.busy_at_drops == pytest.approx(1.2)
    assert check.submit_ms_at_drops == pytest.approx(100.0)
    assert check.submit_ms == pytest.approx(100.0)
    assert check.cause == "generator" and "1.2 of 2 connections were busy" in check.detail
