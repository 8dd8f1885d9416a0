"""Campaigns through ``mailstorm run``, end to end, with the real reference pipeline and fake ESP: the
library's campaign-crash (the one proof of the crash promise), a campaign beside a transactional load
(each counted apart), a trigger the SUT refuses (recorded, the run fails, no crash) and, marked long,
the library's campaign-blast."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailstorm.harness.scenario import load_scenario
from mailstorm.ledger import Kind, LedgerReader

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "scenarios" / "library"
_NS = 1_000_000_000


def run(scenario: str | Path, tmp_path: Path, timeout: float = 240) -> tuple[int, Path, str]:
    out = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    (run_dir,) = out.iterdir()
    return proc.returncode, run_dir, proc.stderr


def campaign_of(run_dir: Path) -> dict:
    (c,) = json.loads((run_dir / "report.json").read_text())["campaign"]
    return c


def test_campaign_crash_resumes_with_no_subscriber_missing_or_mailed_twice(tmp_path):
    code, run_dir, err = run("campaign-crash", tmp_path)
    assert code == 0, err[-3000:]
    c = campaign_of(run_dir)
    o = c["outcomes"]
    assert c["started"] and o["missing"] == 0 and o["suppressed_sent"] == 0 and o["bounced"] == 0
    assert o["delivered"] + o["duplicated"] == 1940 and o["suppressed"] == 60
    reader = LedgerReader(run_dir / "ledger")
    (kill,) = [a for a in reader.records([Kind.ACTION]) if a["what"] == "kill"]
    (restart,) = [a for a in reader.records([Kind.ACTION]) if a["what"] == "restart"]
    acc: dict[str, list[int]] = {}
    for r in reader.records([Kind.ESP_ACCEPTED]):
        acc.setdefault(r["to"][0], []).append(r["t"])
    before = sum(min(ts) < kill["started"] for ts in acc.values())
    assert 0.25 * 1940 < before < 0.6 * 1940, f"the kill came with {before} of 1940 sent, not near 40%"
    # A duplicate is only ever a message in flight at the kill: the ESP took it as the pipeline died
    # (its 250 never read), and the restart sent it again. Nothing the fan-out or the resume did.
    twice = {a: sorted(ts) for a, ts in acc.items() if len(ts) > 1}
    assert len(twice) == o["duplicated"] <= 5
    for address, (first, second, *more) in twice.items():
        assert not more and abs(first - kill["started"]) < 1 * _NS and second > restart["started"], address


def test_a_campaign_beside_a_transactional_load_is_counted_apart(tmp_path):
    scenario = tmp_path / "both.yaml"
    scenario.write_text(
        "name: both\nduration: 4s\ndrain_deadline: 30s\nload: {shape: {kind: steady, rate: 20}}\n"
        "campaign: {id: promo, recipients: 400, unsubscribed: 5%, at: 1s}\n"
    )
    code, run_dir, err = run(scenario, tmp_path)
    assert code == 0, err[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    load = report["outcomes"]
    assert load["submitted"] > 0 and load["delivered"] == load["submitted"]  # no campaign message among them
    c = report["campaign"][0]
    assert c["outcomes"]["delivered"] == 380 and c["outcomes"]["suppressed"] == 20 and c["unexpected"] == 0
    # mailstorm sizing takes the campaign run: a list of 100,000 at the rate this one measured.
    sizing = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "sizing", str(run_dir), "--recipients", "100000", "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    out = json.loads(sizing.stdout)
    assert out["measured_rate"] == c["times"]["rate_per_s"]
    assert out["seconds"] == pytest.approx(100_000 / out["measured_rate"])  # no ESP limit in this run


def test_a_refused_trigger_is_recorded_and_the_run_says_the_campaign_never_started(tmp_path):
    scenario = tmp_path / "refused.yaml"
    scenario.write_text(
        "name: refused\nduration: 2s\n"
        "campaign: {id: nope, recipients: 10, at: 0.2s,\n"
        "           trigger: {via: http, url: '{target_http}/no-such-path'}}\n"
    )
    code, run_dir, err = run(scenario, tmp_path)
    assert code == 1 and "Traceback" not in err
    assert "campaign nope never started: the SUT refused its trigger" in err
    (answer,) = LedgerReader(run_dir / "ledger").records([Kind.CAMPAIGN_ANSWER])
    assert answer["ok"] is False and answer["code"] == 404
    failed = {s["name"] for s in json.loads((run_dir / "report.json").read_text())["slo"] if not s["passed"]}
    assert "campaign_started[nope]" in failed
    assert "never started" in (run_dir / "report.md").read_text()


@pytest.mark.long
@pytest.mark.timeout(600)
def test_campaign_blast_takes_as_long_as_the_esp_quota_says(tmp_path):
    path = LIBRARY / "campaign-blast.yaml"
    sc = load_scenario(path)
    code, run_dir, err = run(path, tmp_path, timeout=sc.duration + sc.drain_deadline + 120)
    assert code == 0, err[-3000:]
    c = campaign_of(run_dir)
    o = c["outcomes"]
    assert o["delivered"] == 19_600 and o["suppressed"] == 400
    assert o["missing"] == o["duplicated"] == o["suppressed_sent"] == 0
    quota_s = 19_600 / sc.esp.rate
    assert quota_s * 0.9 <= c["times"]["completion_s"] <= quota_s * 2, c["times"]
