"""HTTP-API SUTs through ``mailstorm run``, each with its truth known: a small web app sending through the
fake ESP's SendGrid API (tests/harness/webapp_sut.py, a ``process`` target) and the reference pipeline's
``relay: http``, under an ESP outage (refuse, hang) and under each network toxic. Their requests during
the window fail or slow down, the report's window shows the effect, nothing accepted is lost; and a
fault that matches nothing is reported "no effect" and fails ``max_recovery_s``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import yaml

from mailstorm.fake_esp.webhooks.signing import load_or_make
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port
from tests.harness.sut_support import chaos_window, lost_and_counts, run_cli

_NS = 1_000_000_000
WEBAPP = """\
name: webapp-{case}
seed: 5
duration: 10s
drain_deadline: 20s
esp:
  http_port: 0
  webhooks:  # each event posted 1 s after its message was accepted: an outage finds some to hold
    url: "http://127.0.0.1:{port}/events"
    faults: {{delay_ms: 1000}}
    retry_time_scale: 0.01
    timeout_s: 1
target:
  kind: process
  command: ["{{python}}", "{{mailstorm_root}}/tests/harness/webapp_sut.py", "--port", "{{port}}",
            "--esp", "{{esp_http}}", "--timeout", "1.5"]
  port: {port}
  protocol: http
  path: /send
  ready_url: "http://127.0.0.1:{{port}}/health"
load:
  protocol: http
  shape: {{kind: steady, rate: 20}}
  timeout_s: 10
  http:
    api: custom
    body_template: |
      {{"from": "{{{{ sender }}}}", "to": {{{{ recipients | tojson }}}}, "subject": "s", "text": "hello"}}
chaos:
{chaos}
slo:
  max_lost: 0
  max_recovery_s: 10
"""
REFERENCE = """\
name: relay-http-{case}
seed: 6
duration: 10s
drain_deadline: 30s
esp: {{http_port: 0}}
target: {{kind: reference, relay: http, relay_timeout_s: 1.5, backoff_max_s: 1}}
load:
  shape: {{kind: steady, rate: 20}}
chaos:
{chaos}
slo:
  max_lost: 0
  max_recovery_s: 15
"""
STEPS = {
    "refuse": "esp_outage: {mode: refuse}",
    "hang": "esp_outage: {mode: hang}",
    "latency": "network: {type: latency, ms: 400}",
    "latency-both": "network: {type: latency, ms: 400, stream: both}",
    "bandwidth": "network: {type: bandwidth, rate_kbps: 0.5}",
    "reset": "network: {type: reset}",
    "blackhole": "network: {type: blackhole}",
    "slicer": "network: {type: slicer, average_size: 8, delay_us: 20000}",
}
FAILS = {"refuse", "hang", "reset", "blackhole"}  # requests in the window fail; the others slow down


def run(tmp_path: Path, template: str, case: str, chaos: str) -> tuple[int, Path, str]:
    path = tmp_path / f"{case}.yaml"
    path.write_text(template.format(case=case, chaos=chaos, port=free_port()))
    return run_cli(path, tmp_path / "runs")


def window_step(case: str) -> str:
    return f"  - {{at: 3s, for: 4s, name: fault, {STEPS[case]}}}"


def submissions(run_dir: Path, begin: int, end: int) -> tuple[list[dict], list[dict]]:
    """Submissions intended well before the window (after the first second), and well inside it."""
    subs = list(LedgerReader(run_dir / "ledger").records([Kind.LOAD_SUBMIT]))
    t0 = min(s["intended"] for s in subs)
    before = [s for s in subs if t0 + _NS <= s["intended"] < begin - _NS // 2]
    inside = [s for s in subs if begin + _NS // 2 <= s["intended"] < end - _NS // 2]
    return before, inside


def report_window(run_dir: Path) -> dict:
    (fault,) = json.loads((run_dir / "report.json").read_text())["faults"]
    return fault


@pytest.mark.parametrize("case", ["refuse", "hang", "latency", "bandwidth", "reset", "blackhole", "slicer"])
def test_webapp_through_the_sendgrid_api_feels_every_fault(tmp_path, case):
    """The web app's requests inside the window fail (outage, reset, blackhole: 502/504) or slow down by
    hundreds of ms (latency, bandwidth, slicer), never before it; the report's window shows the effect
    (an outage: failures and an impact; a toxic: its recorded actions); nothing accepted is lost."""
    code, run_dir, err = run(tmp_path, WEBAPP, case, window_step(case))
    assert code == 0, err
    lost, accepted, _ = lost_and_counts(run_dir)
    assert not lost and accepted > 0
    before, inside = submissions(run_dir, *chaos_window(run_dir, "fault"))
    assert len(before) >= 30 and len(inside) >= 40
    assert all(s["ok"] for s in before)
    fault = report_window(run_dir)
    assert not fault["no_effect"], fault
    if case in FAILS:
        failed = [s for s in inside if not s["ok"]]
        assert len(failed) >= 0.9 * len(inside), f"{len(failed)} of {len(inside)} failed"
        assert {s["code"] for s in failed} <= {502, 504}
        assert fault["time_to_impact_s"] is not None and fault["effect"]["failed"] > 0
    else:
        assert all(s["ok"] for s in inside)
        slow = statistics.median((s["end"] - s["start"]) / _NS for s in inside)
        fast = statistics.median((s["end"] - s["start"]) / _NS for s in before)
        assert slow - fast >= 0.2, (fast, slow)
    if case.startswith(("refuse", "hang")):
        held = [
            r for r in LedgerReader(run_dir / "ledger").records([Kind.ESP_FAULT]) if r["phase"] == "webhook"
        ]
        assert held and all(r["fault"] == "fault" and r["action"] == "hold" for r in held)
        posted = [r["t"] for r in LedgerReader(run_dir / "ledger").records([Kind.ESP_WEBHOOK])]
        begin, end = chaos_window(run_dir, "fault")
        assert posted and not [t for t in posted if begin + _NS // 10 < t < end]  # a down ESP posts nothing
    else:
        acted = list(LedgerReader(run_dir / "ledger").records([Kind.PROXY_ACTED]))
        assert {r["path"] for r in acted} >= {"http"} and fault["effect"]["acted"] > 0


@pytest.mark.parametrize("case", ["refuse", "hang", "blackhole", "latency-both"])
def test_reference_relay_http_feels_every_fault(tmp_path, case):
    """The reference pipeline relaying over the SendGrid API: its relay requests inside the window fail
    (deferrals, none before it) or arrive late (end-to-end latency up by the toxic's delay); after the
    window everything it accepted reaches the ESP; the report's window shows the effect."""
    code, run_dir, err = run(tmp_path, REFERENCE, case, window_step(case))
    assert code == 0, err
    lost, accepted, _ = lost_and_counts(run_dir)
    assert not lost and accepted > 0
    begin, end = chaos_window(run_dir, "fault")
    reader = LedgerReader(run_dir / "ledger")
    fault = report_window(run_dir)
    assert not fault["no_effect"], fault
    if case in FAILS:
        deferred = [r["t"] for r in reader.records([Kind.SUT_DEFERRED])]
        assert deferred and all(begin <= t <= end + 3 * _NS for t in deferred)
        assert fault["effect"]["failed"] > 0
    else:
        first_esp: dict[str, int] = {}
        for r in reader.records([Kind.ESP_ACCEPTED]):
            first_esp[r["id"]] = min(r["t"], first_esp.get(r["id"], r["t"]))
        before, inside = submissions(run_dir, begin, end)
        e2e = [[(first_esp[s["id"]] - s["intended"]) / _NS for s in part] for part in (before, inside)]
        assert statistics.median(e2e[1]) - statistics.median(e2e[0]) >= 0.3
        assert fault["effect"]["acted"] > 0


def test_webhook_path_goes_through_the_proxy(tmp_path):
    """A blackhole narrowed to the webhook path (``on: [webhooks]``): the SendGrid API path is untouched
    (every submission accepted), the ESP's posts back to the web app inside the window time out and are
    retried after it, and the proxy records acting on the webhook path only."""
    chaos = "  - {at: 3s, for: 4s, name: fault, network: {type: blackhole, on: [webhooks]}}"
    code, run_dir, err = run(tmp_path, WEBAPP, "webhook-path", chaos)
    assert code == 0, err
    begin, end = chaos_window(run_dir, "fault")
    reader = LedgerReader(run_dir / "ledger")
    assert all(s["ok"] for s in reader.records([Kind.LOAD_SUBMIT]))
    # Until the run stops its parts (then the web app, the proxy and the ESP go, in that order).
    stop = next(r["t"] for r in reader.records([Kind.RUN_PHASE]) if r["phase"] == "stop")
    posts = [r for r in reader.records([Kind.ESP_WEBHOOK]) if r["t"] < stop]
    failed = [r for r in posts if not r["ok"]]
    # A POST swallowed in the window times out (1 s) by then; every failure is the blackhole's.
    assert failed and all(begin <= r["t"] <= end + 2 * _NS and "Timeout" in r["error"] for r in failed)
    assert all(r["ok"] for r in posts if r["t"] < begin)
    retried = {r["event_id"] for r in posts if r["ok"] and r["attempt"] > 1 and r["t"] >= end}
    assert retried and retried <= {r["event_id"] for r in failed}
    assert {r["path"] for r in reader.records([Kind.PROXY_ACTED])} == {"webhooks"}
    assert not report_window(run_dir)["no_effect"]
    # The run's webhook keys: made by the runner, SendGrid's verification key in run.json and printed,
    # the file the ESP signed with.
    keys = json.loads((run_dir / "run.json").read_text())["webhook_keys"]
    assert keys["keys_file"] == str(run_dir / "esp" / "webhook-keys.json")
    assert load_or_make(Path(keys["keys_file"])).sendgrid_public == keys["sendgrid_public_key"]
    assert f"SendGrid verification key {keys['sendgrid_public_key']}" in err
    # Posted via the proxy; the ledger names the URL the scenario gave.
    hooks = yaml.safe_load((run_dir / "esp-webhooks.yaml").read_text())
    assert hooks["via"] != hooks["url"] and {r["url"] for r in posts} == {hooks["url"]}


def test_a_fault_that_matches_nothing_is_no_effect_and_fails(tmp_path):
    """The web app never speaks SMTP: an ESP fault on the SMTP MAIL phase and a network reset narrowed to
    the SMTP path touch nothing. Both windows are "no effect" in every report, and max_recovery_s fails:
    the run exits 1 although every message was delivered."""
    chaos = (
        '  - {at: 2s, for: 3s, name: smtp-only, esp_fault: {type: reply, phase: mail, reply: "451 4.3.0"}}\n'
        "  - {at: 6s, for: 3s, name: wrong-path, network: {type: reset, on: [smtp]}}"
    )
    code, run_dir, err = run(tmp_path, WEBAPP, "nothing", chaos)
    assert code == 1, err
    report = json.loads((run_dir / "report.json").read_text())
    assert [(f["name"], f["no_effect"]) for f in report["faults"]] == [
        ("smtp-only", True),
        ("wrong-path", True),
    ]
    assert report["outcomes"]["delivered"] == report["outcomes"]["submitted"] > 0
    (slo,) = [s for s in report["slo"] if s["name"] == "max_recovery_s"]
    assert not slo["passed"] and "had no effect (smtp-only, wrong-path)" in slo["detail"]
    md = (run_dir / "report.md").read_text()
    assert "**no effect**" in md and "smtp-only, wrong-path" in md
