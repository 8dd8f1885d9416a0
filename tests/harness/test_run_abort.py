"""Fail fast: an SLO marked ``abort: true`` stops a run that can no longer meet it.

End to end through ``mailstorm run`` (the CLI as a subprocess, the reference pipeline, a fake ESP that
refuses every message), then the live judge (mailstorm.harness.abort) on real record classes fed as the
runner's tail feeds them, and the scenario checks that refuse an abort that cannot be judged live.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import msgspec
import pytest
import yaml

from mailstorm.errors import EXIT_BAD_INPUT, EXIT_SLO_BREACHED, ConfigError
from mailstorm.harness.abort import WINDOW_S, AbortJudge
from mailstorm.harness.progress import LiveStats
from mailstorm.harness.scenario import json_schema, load_scenario_text
from mailstorm.ledger import Kind, LedgerReader, LoadDropped, LoadStarted
from mailstorm.reports.spec import SloSpec
from tests.records import accepted, replied, submit

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mailstorm.cli"]
_NS = 1_000_000_000

REFUSING = """\
name: refused
seed: 5
duration: 30s
drain_deadline: 30s
target: {kind: reference}
esp:
  faults:
    - {type: reply, phase: eod, reply: "451 4.3.0 Temporary service failure"}
load:
  shape: {kind: steady, rate: 20}
slo:
  max_lost: 0
  p95_e2e_ms: {limit: 1000, abort: true, after: 2s}
"""


def test_an_esp_that_refuses_everything_stops_a_30s_run_within_seconds(tmp_path):
    """The ESP answers 451 to every message: the pipeline keeps them and retries, nothing is delivered,
    the live p95 (the age of what waits) passes 1 s and stays over for 2 s: the runner stops the load
    within a few seconds of a 30 s plan, drains briefly, writes every report with the reason, exits 1."""
    path = tmp_path / "refused.yaml"
    path.write_text(REFUSING)
    out = tmp_path / "runs"
    summary = tmp_path / "step-summary.md"  # as $GITHUB_STEP_SUMMARY: earlier steps wrote to it
    summary.write_text("earlier step\n")
    proc = subprocess.run(
        [*CLI, "run", str(path), "--out", str(out), "--quiet", "--summary-file", str(summary)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == EXIT_SLO_BREACHED, proc.stderr
    (run_dir,) = out.iterdir()
    timeline = list(
        LedgerReader(run_dir / "ledger").records([Kind.RUN_PHASE, Kind.RUN_ABORTED, Kind.RUN_ENDED])
    )
    (aborted,) = [r for r in timeline if r["k"] == Kind.RUN_ABORTED]
    assert aborted["slo"] == "p95_e2e_ms" and aborted["actual"] > 1000
    assert 2 <= aborted["at_s"] <= 8, aborted  # 1 s to pass the limit, 2 s of grace, a judgement a second
    load_t0 = next(r["t0"] for r in timeline if r["k"] == Kind.RUN_PHASE and r["phase"] == "load")
    ended = next(r for r in timeline if r["k"] == Kind.RUN_ENDED)
    # stopped, drained (5 s at most) and ended well before the 30 s the load was planned for
    assert (ended["t"] - load_t0) / 1e9 < 20, (ended["t"] - load_t0) / 1e9
    assert ended["reason"].startswith("aborted: end-to-end p95 over 1000 ms for 2 s")
    report = json.loads((run_dir / "report.json").read_text())
    assert report["verdict"] == "fail" and report["aborted"]["slo"] == "p95_e2e_ms"
    assert report["slo"][0]["name"] == "abort" and not report["slo"][0]["passed"]
    assert report["load"]["offered"] < report["load"]["planned"] / 2  # most of the plan never ran
    md = (run_dir / "report.md").read_text()
    assert f"Stopped at {aborted['at_s']:g} s** by `p95_e2e_ms`" in md
    assert summary.read_text() == "earlier step\n" + md  # --summary-file: report.md, appended
    assert "Stopped at" in (run_dir / "report.html").read_text()
    assert "<failure" in (run_dir / "junit.xml").read_text()
    assert "aborting at" in proc.stderr
    assert json.loads((run_dir / "run.json").read_text())["exit_code"] == EXIT_SLO_BREACHED


def test_abort_on_an_slo_that_cannot_be_judged_live_exits_2_naming_it(tmp_path):
    """max_recovery_s is judged on each fault window after the run: ``abort`` on it is bad input."""
    path = tmp_path / "bad.yaml"
    path.write_text(REFUSING.replace("  max_lost: 0\n", "  max_recovery_s: {limit: 10, abort: true}\n"))
    proc = subprocess.run([*CLI, "validate", str(path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == EXIT_BAD_INPUT
    (line,) = proc.stderr.strip().splitlines()
    assert f"{path}:12: slo.max_recovery_s.abort: max_recovery_s cannot be judged while the run goes" in line


def test_a_summary_file_nowhere_is_bad_input_before_the_run_starts(tmp_path):
    proc = subprocess.run(
        [*CLI, "run", "smoke", "--out", str(tmp_path), "--summary-file", str(tmp_path / "no" / "such.md")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stderr.strip().endswith("such.md: not a file in an existing directory")
    assert not list(tmp_path.iterdir())  # no run directory: nothing started


BASE = "name: x\nduration: 5s\nload: {shape: {kind: steady, rate: 1}}\n"


@pytest.mark.parametrize(
    ("slo", "message"),
    [
        ("max_pending: {limit: 0, abort: true}", "slo.max_pending.abort: max_pending cannot be judged"),
        ("max_bounced: {limit: 0, abort: true, after: 5s}", "slo.max_bounced.after: max_bounced only grows"),
        (
            "p95_e2e_ms: {limit: 9, abort: true, after: soon}",
            "slo.p95_e2e_ms.after: 'soon' is not a duration",
        ),
        ("p95_e2e_ms: {limit: 9, after: 5s}", "slo.p95_e2e_ms.after: after is the grace of an abort"),
        ("max_lost: {limit: 0, abort: yes please}", "slo.max_lost.abort: abort is true or false"),
        ("max_lost: {abort: true}", "slo.max_lost: max_lost as a mapping needs its limit"),
        ("max_lost: {limit: 0, stop: true}", "slo.max_lost.stop: unknown key 'stop'"),
        ("recovery_k: {limit: 3}", "slo.recovery_k: recovery_k takes a value, not a mapping"),
    ],
)
def test_a_bad_abort_names_its_field(slo, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        load_scenario_text(f"{BASE}slo:\n  {slo}\n")


def test_the_mapping_form_is_the_limit_every_report_reads_plus_its_abort_rule():
    sc = load_scenario_text(
        f"{BASE}slo:\n  p99_e2e_ms: {{limit: 2500, abort: true, after: 1m}}\n  max_lost: 3\n"
    )
    assert sc.slo.p99_e2e_ms == 2500 and sc.slo.max_lost == 3
    assert {n: r.after_s for n, r in sc.slo.aborts.items()} == {"p99_e2e_ms": 60.0}
    # slo.json (what the reports read) round-trips it
    assert SloSpec.model_validate_json(sc.slo.model_dump_json()) == sc.slo


# -- the live judge, on the records the runner's tail yields -----------------------------------------------


def judge_for(**slo) -> tuple[AbortJudge, LiveStats]:
    stats = LiveStats()
    return AbortJudge(SloSpec.model_validate(slo), stats), stats


def feed(judge: AbortJudge, stats: LiveStats, records: list, t: int) -> None:
    stamped = [msgspec.structs.replace(r, t=t) for r in records]
    stats.feed(stamped)
    judge.feed(stamped)


def test_max_lost_counts_only_what_the_sut_held_past_the_grace():
    """A message the SUT took and nobody saw again is lost once its intended send is over ``after`` old;
    one delivered, deferred (pending) or bounced in time is not; before the grace nothing is."""
    judge, stats = judge_for(max_lost={"limit": 0, "abort": True, "after": "3s"})
    t0 = 1_000 * _NS
    feed(judge, stats, [submit(f"m{i}", intended=t0 + i * _NS // 10) for i in range(4)], t0)
    feed(judge, stats, [accepted("m0"), replied("m1", 554)], t0 + _NS)
    assert judge.check(t0 + 3 * _NS) is None  # m2, m3 are not 3 s old yet
    breach = judge.check(t0 + 4 * _NS)
    assert breach is not None and breach.slo == "max_lost" and breach.actual == 2
    assert "2 messages the SUT took were neither at the ESP, refused nor held after 3 s" in breach.detail


def test_counts_that_only_grow_abort_at_once():
    judge, stats = judge_for(max_bounced={"limit": 1, "abort": True})
    t0 = 1_000 * _NS
    feed(judge, stats, [submit(f"m{i}", intended=t0) for i in range(3)], t0)
    feed(judge, stats, [replied("m0", 550)], t0)
    assert judge.check(t0 + _NS) is None
    feed(judge, stats, [replied("m1", 550)], t0 + _NS)
    breach = judge.check(t0 + 3 * _NS)
    assert breach is not None and (breach.slo, breach.actual, breach.after_s) == ("max_bounced", 2, None)


def test_a_share_of_dropped_arrivals_waits_for_the_plan():
    """max_dropped as a percentage is judged against the plan the load processes announced."""
    judge, stats = judge_for(max_dropped={"limit": "10%", "abort": True})
    t0 = 1_000 * _NS
    feed(judge, stats, [submit("m0", intended=t0), LoadDropped(intended=t0, count=5, worker=0)], t0)
    assert judge.check(t0 + _NS) is None  # no plan said yet: 5 of 6 would look like 83%
    feed(judge, stats, [LoadStarted(worker=0, t0=t0, planned=100, shape="steady")], t0)
    assert judge.check(t0 + 3 * _NS) is None  # 5 of 100
    feed(judge, stats, [LoadDropped(intended=t0, count=6, worker=0)], t0)
    breach = judge.check(t0 + 5 * _NS)
    assert breach is not None and (breach.slo, breach.limit, breach.actual) == ("max_dropped", 10, 11)


def test_the_live_p95_takes_waiting_messages_and_recent_deliveries_and_needs_its_grace():
    """p95 over the limit from deliveries in the window (either file order), and from the age of what
    waits; it must stay over for ``after`` seconds, and a break resets the grace."""
    judge, stats = judge_for(p95_e2e_ms={"limit": 500, "abort": True, "after": "2s"})
    t0 = 1_000 * _NS
    # 40 delivered fast (the ESP's file read before the load's for half of them), 2 slow: p95 is fast
    fast = [f"f{i}" for i in range(40)]
    feed(judge, stats, [accepted(m) for m in fast[:20]], t0 + _NS // 10)
    feed(judge, stats, [submit(m, intended=t0) for m in fast], t0 + _NS // 10)
    feed(judge, stats, [accepted(m) for m in fast[20:]], t0 + _NS // 10)
    feed(judge, stats, [submit(m, intended=t0) for m in ("s0", "s1")], t0)
    feed(judge, stats, [accepted("s0"), accepted("s1")], t0 + 2 * _NS)
    assert judge.check(t0 + 2 * _NS) is None and not judge._over_since
    # now 10 messages wait, 3 s old: over
    feed(judge, stats, [submit(f"w{i}", intended=t0 + 2 * _NS) for i in range(10)], t0 + 2 * _NS)
    assert judge.check(t0 + 5 * _NS) is None  # over since now: the grace runs
    assert judge.check(t0 + 6 * _NS) is None
    breach = judge.check(t0 + 7 * _NS + 1)
    assert breach is not None and breach.slo == "p95_e2e_ms" and breach.actual > 500
    # the window forgets old deliveries
    assert all(t >= t0 + 7 * _NS - WINDOW_S * _NS for t, _ in judge._delivered)


def test_min_throughput_aborts_after_a_silence_of_after_seconds():
    judge, stats = judge_for(min_throughput={"limit": 1, "abort": True, "after": "3s"})
    t0 = 1_000 * _NS
    feed(judge, stats, [submit("m0", intended=t0)], t0)
    feed(judge, stats, [accepted("m0")], t0 + 2 * _NS)
    assert judge.check(t0 + 4 * _NS) is None
    breach = judge.check(t0 + 5 * _NS + 1)
    assert breach is not None and breach.slo == "min_throughput"
    assert breach.detail.startswith("no message delivered for 3.0 s of load")


def test_no_abort_rule_no_judge():
    judge, _ = judge_for(max_lost=0, p95_e2e_ms=100)
    assert not judge and judge.check(10**18) is None


def test_the_json_schema_takes_both_forms_of_an_objective():
    """Editors (mailstorm schema) accept a limit as a value or as {limit, abort, after}, and nothing else."""
    schema = json_schema()
    doc = yaml.safe_load(REFUSING)
    jsonschema.validate(doc, schema)
    doc["slo"]["p95_e2e_ms"]["stop"] = True
    with pytest.raises(jsonschema.ValidationError, match="'stop' was unexpected"):
        jsonschema.validate(doc, schema)
