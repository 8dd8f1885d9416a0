"""A load that did not happen says so: `mailstorm run` judges dropped arrivals (max_dropped, 1% of the
planned arrivals by default) and its headline says planned against offered.

The overloaded run offers far more than its generator can start: one load process with one connection
against the reference pipeline, at 3,000 msg/s. How many it drops depends on this machine's load, so the
test asserts that the verdict fails on max_dropped and that the numbers add up (planned = offered +
dropped, from the ledgers), never a fixed count. A run at a realistic rate drops nothing and passes.
"""

from __future__ import annotations

import json
from pathlib import Path

from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import run_cli


def _scenario(tmp_path: Path, name: str, load: str, duration: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nseed: 5\nduration: {duration}\ndrain_deadline: 30s\nload:\n{load}")
    return path


def _from_ledgers(run_dir: Path) -> tuple[int, int, int]:
    """(planned, offered, dropped) as the load processes recorded them."""
    reader = LedgerReader(run_dir / "ledger")
    planned = sum(r["planned"] for r in reader.records([Kind.LOAD_STARTED]))
    offered = len({r["id"] for r in reader.records([Kind.LOAD_SUBMIT])})
    dropped = sum(r["count"] for r in reader.records([Kind.LOAD_DROPPED]))
    return planned, offered, dropped


def _headline_numbers(text: str, planned: int, offered: int, dropped: int) -> None:
    line = f"Load: {offered:,} of {planned:,} planned arrivals offered, {dropped:,} dropped"
    assert line in text, text


def test_an_overloaded_generator_fails_on_max_dropped_with_planned_offered_and_dropped_in_the_headline(
    tmp_path,
):
    """3,000 msg/s through one connection cannot be offered: the arrivals the generator dropped fail the
    run on max_dropped (not a PASS on what little was sent), the headline (console and every report)
    says planned, offered and dropped, and the report names who could not keep up."""
    load = "  shape: {kind: steady, rate: 3000}\n  workers: 1\n  max_connections: 1\n"
    code, run_dir, err = run_cli(_scenario(tmp_path, "overload", load, "3s"), tmp_path / "runs", timeout=300)
    assert code == 1, err
    planned, offered, dropped = _from_ledgers(run_dir)
    assert planned == 9000 and planned == offered + dropped
    assert dropped > planned / 100 and offered > 0

    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "fail"
    judged = {s["name"]: s for s in report["slo"]}
    assert judged["max_dropped"]["passed"] is False and judged["max_dropped"]["actual"] == dropped
    assert judged["max_dropped"]["target"] == planned / 100  # the default: 1% of the planned arrivals
    assert report["load"] | {"detail": None} == report["load"] | {
        "planned": planned,
        "offered": offered,
        "dropped": dropped,
        "detail": None,
    }
    assert report["load"]["cause"] in ("generator", "sut") and report["load"]["detail"]
    assert report["outcomes"]["submitted"] == offered
    for text in (err, (run_dir / "report.md").read_text(), (run_dir / "report.html").read_text()):
        _headline_numbers(text, planned, offered, dropped)
    assert (
        "dropped by the load generator" in err
        and "who could not keep up" in (run_dir / "report.md").read_text().lower()
    )


def test_a_realistic_rate_drops_nothing_and_passes(tmp_path):
    """25 msg/s is well within the generator and the pipeline: nothing dropped, max_dropped judged and
    held, the run passes (no false FAIL) and says all 100 planned arrivals were offered."""
    load = "  shape: {kind: steady, rate: 25}\n"
    code, run_dir, err = run_cli(_scenario(tmp_path, "calm", load, "4s"), tmp_path / "runs", timeout=300)
    assert code == 0, err
    assert _from_ledgers(run_dir) == (100, 100, 0)
    report = json.loads((run_dir / "report.json").read_text())
    judged = {s["name"]: s for s in report["slo"]}
    assert (judged["max_dropped"]["passed"], judged["max_dropped"]["actual"]) == (True, 0)
    assert report["load"]["cause"] is None and report["verdict"] == "pass"
    _headline_numbers(err, 100, 100, 0)
