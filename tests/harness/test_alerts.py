"""Alerts under test, with the real Prometheus and Alertmanager from Debian: a run whose ESP goes down
must see its alert fire and resolve, timed against the ledger; a rule that fires at start is a false
alert; a rules file Prometheus refuses, or no Prometheus, is one line and exit 2 before anything starts;
the receiver alone takes a real Alertmanager's notifications.

Timing bounds, from the stated intervals (scrape 1 s, evaluation 1 s, Alertmanager: group_wait 0 s,
group_interval 1 s), for the rule "the pipeline relays nothing while it takes mail in"
(``rate(relayed[3s]) == 0``): it fires once the range holds no relay, between the range less two
scrapes (one may come late on a busy machine) and the range plus a scrape and an evaluation after the
last relay before the outage; it resolves at
the first scrape and evaluation after the first relay after it. ``SLACK_S`` covers Prometheus ->
Alertmanager -> receiver and a busy machine.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailstorm.harness.alerts.receiver import AlertReceiver
from mailstorm.harness.alerts.spec import AlertsSpec
from mailstorm.harness.alerts.stack import ALERTMANAGER, AlertStack
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "mailstorm.cli"]
SCRAPE_S = EVAL_S = 1.0
RANGE_S = 3.0
SLACK_S = 2.5
_NS = 1_000_000_000

needs_prometheus = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which(ALERTMANAGER)),
    reason="Debian's prometheus and prometheus-alertmanager (scripts/setup.sh --test installs them)",
)

RULES = """\
groups:
  - name: test
    rules:
      - alert: EspDeliveryStalled
        expr: >-
          rate(mailstorm_sut_relayed_total{job="sut"}[3s]) == 0
          and rate(mailstorm_sut_accepted_total{job="sut"}[3s]) > 0
      - alert: AlwaysFiring
        expr: vector(1)
"""

SCENARIO = """\
name: alerts-test
seed: 5
duration: 12s
drain_deadline: 30s
target: {{kind: reference}}
load:
  shape: {{kind: steady, rate: 20}}
chaos:
  - at: 4s
    for: 6s
    name: esp-down
    esp_outage: {{mode: refuse}}
alerts:
  rules: {rules}
  scrape_interval: 1s
  evaluation_interval: 1s
  map: {{EspDeliveryStalled: [esp-down]}}
slo:
  max_false_alerts: 0
  max_missed_alerts: 0
  max_time_to_alert_s: 10
"""


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


def write(tmp_path: Path, rules: str = RULES) -> Path:
    (tmp_path / "rules.yml").write_text(rules)
    path = tmp_path / "alerts-test.yaml"
    path.write_text(SCENARIO.format(rules="rules.yml"))
    return path


@needs_prometheus
def test_alert_fires_on_an_esp_outage_and_resolves_after_it(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    proc = cli("run", str(write(tmp_path)), "--out", str(out), "--quiet")
    (run_dir,) = out.iterdir()
    # AlwaysFiring fired at start: a false alert, and the verdict says so.
    assert proc.returncode == 1, proc.stderr
    assert "FAIL max_false_alerts: 1" in proc.stderr and "AlwaysFiring" in proc.stderr

    info = json.loads((run_dir / "run.json").read_text())
    assert set(info["alerts"]) == {"receiver", "prometheus", "alertmanager"}
    assert info["metrics"].startswith("127.0.0.1:")
    scraped = (run_dir / "alerts" / "prometheus.yml").read_text()
    assert info["metrics"] in scraped  # Prometheus scraped the runner's /metrics, the ESP's and the SUT's
    assert "job_name: esp" in scraped and "job_name: sut" in scraped

    ledger = LedgerReader(run_dir / "ledger")
    timeline = ledger.merged([Kind.CHAOS_BEGIN, Kind.CHAOS_END, Kind.RUN_STARTED])
    begin = next(r["t"] for r in timeline if r["k"] == Kind.CHAOS_BEGIN)
    end = next(r["t"] for r in timeline if r["k"] == Kind.CHAOS_END)
    started = next(r["t"] for r in timeline if r["k"] == Kind.RUN_STARTED)
    relayed = [r["t"] for r in ledger.merged([Kind.SUT_RELAYED])]
    before = max(t for t in relayed if t <= begin)
    after = min(t for t in relayed if t > begin)
    assert after >= end, "nothing reached the ESP while it refused"
    notices = ledger.merged([Kind.ALERT_FIRING, Kind.ALERT_RESOLVED])
    stalled = [r for r in notices if r["name"] == "EspDeliveryStalled"]
    fired = [r["t"] for r in stalled if r["k"] == Kind.ALERT_FIRING]
    resolved = [r["t"] for r in stalled if r["k"] == Kind.ALERT_RESOLVED]
    assert len(fired) == len(resolved) == 1, notices

    # Fired once the range held no relay: after the last relay before the outage, within the bounds.
    low, high = RANGE_S - 2 * SCRAPE_S, RANGE_S + SCRAPE_S + EVAL_S + SLACK_S
    assert before + low * _NS <= fired[0] <= before + high * _NS, (fired[0] - before) / _NS
    # Resolved after the ESP came back: the first relay, then a scrape and an evaluation.
    assert after <= resolved[0] <= after + (SCRAPE_S + EVAL_S + SLACK_S) * _NS, (resolved[0] - after) / _NS

    # The report says the same, from the ledger alone.
    report = json.loads((run_dir / "report.json").read_text())["alerts"]
    (window,) = report["windows"]
    assert window["name"] == "esp-down" and not window["missed"]
    assert window["alerts"] == ["EspDeliveryStalled"]
    assert window["time_to_fire_s"] == pytest.approx((fired[0] - begin) / _NS, abs=0.01)
    assert window["time_to_resolve_s"] == pytest.approx((resolved[0] - end) / _NS, abs=0.01)
    (false,) = report["false_alerts"]
    # At start: before the fault at 4 s (within a second or two of the run's start on a busy machine).
    assert false["name"] == "AlwaysFiring" and false["start_s"] < 2.0
    always = [r for r in notices if r["name"] == "AlwaysFiring" and r["k"] == Kind.ALERT_FIRING]
    assert always[0]["t"] < started + 2 * _NS
    md = (run_dir / "report.md").read_text()
    assert (
        "| esp-down |" in md and "False alerts (fired outside every fault window and its recovery): 1" in md
    )
    # Prometheus and Alertmanager were stopped, their data directories removed.
    for url in (info["alerts"]["prometheus"], info["alerts"]["alertmanager"]):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/-/ready", timeout=1)
    assert sorted(p.name for p in (run_dir / "alerts").iterdir()) == ["alertmanager.yml", "prometheus.yml"]


@needs_prometheus
def test_a_rules_file_prometheus_refuses_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    bad = RULES.replace("vector(1)", "rate(up[5s]")
    out = tmp_path / "runs"
    proc = cli("run", str(write(tmp_path, bad)), "--out", str(out), "--quiet")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "alerts.rules: Prometheus refuses" in line and "parse error" in line
    assert not out.exists()  # no run directory: nothing started


@needs_prometheus
def test_without_promtool_prometheus_itself_refuses_the_rules(tmp_path: Path) -> None:
    """The same one line when promtool is not installed: Prometheus' own start failure."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("prometheus", ALERTMANAGER):
        (bin_dir / name).symlink_to(shutil.which(name))
    bad = RULES.replace("vector(1)", "rate(up[5s]")
    out = tmp_path / "runs"
    proc = cli(
        "run",
        str(write(tmp_path, bad)),
        "--out",
        str(out),
        "--quiet",
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "alerts.rules: Prometheus refuses" in line and "parse error" in line
    assert not out.exists()


def test_without_prometheus_the_scenario_says_so_in_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    out = tmp_path / "runs"
    proc = cli(
        "run", str(write(tmp_path)), "--out", str(out), "--quiet", env={**os.environ, "PATH": str(empty)}
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "prometheus is not installed" in line
    assert not out.exists()


@needs_prometheus
def test_the_receiver_alone_takes_a_real_alertmanagers_notifications(tmp_path: Path) -> None:
    """``start: false``: the user's own Alertmanager posts to mailstorm's receiver."""
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    receiver = AlertReceiver(ledger).start()
    port = free_port()
    config = tmp_path / "am.yml"
    config.write_text(
        "route: {receiver: r, group_by: ['...'], group_wait: 0s, group_interval: 1s}\n"
        f"receivers: [{{name: r, webhook_configs: [{{url: '{receiver.url}', send_resolved: true}}]}}]\n"
    )
    argv = [
        shutil.which(ALERTMANAGER), f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
    ]  # fmt: skip
    am = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        until(lambda: _ok(f"{base}/-/ready"), "Alertmanager ready")
        now = datetime.now(UTC)
        alert = {"labels": {"alertname": "Mine", "team": "mail"}, "annotations": {"summary": "it broke"}}
        post(f"{base}/api/v2/alerts", [{**alert, "startsAt": now.isoformat()}])
        reader = LedgerReader(ledger)
        until(lambda: reader.count(Kind.ALERT_FIRING) == 1, "the firing notification")
        post(
            f"{base}/api/v2/alerts",
            [{**alert, "startsAt": now.isoformat(), "endsAt": (now + timedelta(milliseconds=1)).isoformat()}],
        )
        until(lambda: reader.count(Kind.ALERT_RESOLVED) == 1, "the resolved notification")
    finally:
        am.terminate()
        am.wait(10)
        receiver.stop()
    firing, resolved = LedgerReader(ledger).merged([Kind.ALERT_FIRING, Kind.ALERT_RESOLVED])
    assert firing["name"] == resolved["name"] == "Mine" and firing["labels"]["team"] == "mail"
    assert firing["summary"] == "it broke" and firing["fingerprint"] == resolved["fingerprint"]
    assert "ends_at" not in firing and resolved["ends_at"]


def test_the_receiver_refuses_what_is_not_a_notification(tmp_path: Path) -> None:
    receiver = AlertReceiver(tmp_path).start()
    try:
        for body in (b"not json", b"[1, 2]", b'{"alerts": [{"status": "firing"}]}'):
            req = urllib.request.Request(receiver.url, data=body, method="POST")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            assert err.value.code == 400
            err.value.close()
    finally:
        receiver.stop()
    assert LedgerReader(tmp_path).count(Kind.ALERT_FIRING) == 0


def test_a_normal_stop_waits_bounded_for_firing_alerts_to_resolve(tmp_path: Path) -> None:
    """await_resolved: returns at once with nothing firing; waits for the alerts named in map (an alert
    not named there is not waited for) and returns when they resolve; with one that never does, returns
    it after resolve_wait."""
    (tmp_path / "ledger").mkdir()
    spec = AlertsSpec(start=False, map={"Stalled": ("esp-down",)}, resolve_wait=0.5)
    stack = AlertStack(spec)
    stack.start(tmp_path, {})
    try:
        url = stack.receiver.url
        assert stack.await_resolved(io.StringIO()) == []
        notify = lambda name, status: post(url, {"alerts": [notice(name, status)]})  # noqa: E731
        notify("Unmapped", "firing")
        assert stack.await_resolved(io.StringIO()) == []  # not named in map: not waited for
        notify("Stalled", "firing")
        said = io.StringIO()
        started = time.monotonic()
        assert stack.await_resolved(said) == ["Stalled"]
        assert 0.5 <= time.monotonic() - started < 5
        assert "waiting up to 0.5s for 1 firing alert(s) to resolve (Stalled)" in said.getvalue()
        threading.Timer(0.2, notify, ("Stalled", "resolved")).start()
        stack.spec = spec.model_copy(update={"resolve_wait": 30.0})
        started = time.monotonic()
        assert stack.await_resolved(io.StringIO()) == []
        assert time.monotonic() - started < 10  # returned at the resolve, not the bound
    finally:
        stack.stop()


def notice(name: str, status: str) -> dict:
    return {"status": status, "labels": {"alertname": name}, "fingerprint": f"fp-{name}"}


def post(url: str, body: object) -> None:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    urllib.request.urlopen(req, timeout=5).close()


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def until(check, what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g}s"
        time.sleep(0.1)  # poll period; the condition itself is the readiness check


@pytest.mark.long
@needs_prometheus
def test_a_run_with_the_receiver_alone_judges_the_users_alertmanager(tmp_path: Path) -> None:
    """``start: false``: the run starts no Prometheus; the user's Alertmanager (here a real one this test
    starts) posts to the receiver on the port the scenario fixed, and the reports judge what it said."""
    receiver_port, am_port = free_port(), free_port()
    config = tmp_path / "am.yml"
    config.write_text(
        "route: {receiver: r, group_by: ['...'], group_wait: 0s, group_interval: 1s}\n"
        f"receivers: [{{name: r, webhook_configs: [{{url: 'http://127.0.0.1:{receiver_port}/alerts', "
        "send_resolved: true}]}]\n"
    )
    argv = [
        shutil.which(ALERTMANAGER), f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
        f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
    ]  # fmt: skip
    am = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scenario = tmp_path / "own-am.yaml"
    scenario.write_text(
        "name: own-am\nseed: 2\nduration: 10s\ndrain_deadline: 30s\n"
        "load:\n  shape: {kind: steady, rate: 10}\n"
        "chaos:\n  - {at: 3s, for: 3s, name: esp-down, esp_outage: {mode: refuse}}\n"
        f"alerts: {{start: false, receiver_port: {receiver_port}}}\n"
        "slo: {max_missed_alerts: 0, max_false_alerts: 0}\n"
    )
    out = tmp_path / "runs"
    run = subprocess.Popen(
        [*CLI, "run", str(scenario), "--out", str(out), "--quiet"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{am_port}"
        until(lambda: _ok(f"{base}/-/ready"), "Alertmanager ready")
        timeline = lambda: list(out.glob("*/ledger/timeline.jsonl"))  # noqa: E731
        until(lambda: timeline() and "chaos.begin" in timeline()[0].read_text(), "the outage", 60)
        now = datetime.now(UTC)
        alert = {"labels": {"alertname": "MyEspDown"}, "startsAt": now.isoformat()}
        post(f"{base}/api/v2/alerts", [alert])
        until(lambda: "chaos.end" in timeline()[0].read_text(), "the outage's end", 30)
        post(f"{base}/api/v2/alerts", [{**alert, "endsAt": datetime.now(UTC).isoformat()}])
        _, err = run.communicate(timeout=120)
    finally:
        run.kill()
        am.terminate()
        am.wait(10)
    assert run.returncode == 0, err
    assert f"alert receiver at http://127.0.0.1:{receiver_port}/alerts" in err
    (run_dir,) = out.iterdir()
    info = json.loads((run_dir / "run.json").read_text())
    assert info["alerts"] == {"receiver": f"http://127.0.0.1:{receiver_port}/alerts"}
    assert not (run_dir / "alerts").exists() and not (run_dir / "logs" / "prometheus.log").exists()
    (window,) = json.loads((run_dir / "report.json").read_text())["alerts"]["windows"]
    assert window["alerts"] == ["MyEspDown"] and 0 <= window["time_to_fire_s"] < 3
    assert window["time_to_resolve_s"] is not None and window["time_to_resolve_s"] >= 0


@needs_prometheus
def test_prometheus_scrapes_every_esp_of_a_run_with_several(tmp_path: Path) -> None:
    """Two fake ESPs, each with its own control token: the stack's Prometheus has both control APIs as
    targets (a scrape config per token), labelled with the ESP's name, and scrapes each one up."""
    from mailstorm.harness.alerts.spec import AlertsSpec
    from mailstorm.harness.alerts.stack import AlertStack, scrape_targets
    from mailstorm.harness.esp_fleet import EspFleet
    from mailstorm.harness.scenario import NamedEsp

    rules = "groups: [{name: t, rules: [{alert: Never, expr: vector(1) == 0}]}]\n"
    (tmp_path / "rules.yml").write_text(rules)
    (tmp_path / "logs").mkdir()
    specs = tuple(NamedEsp(name=n, token=f"token-of-{n}") for n in ("primary", "secondary"))
    fleet = EspFleet(
        specs, seed=len, run_dir=tmp_path, ledger_dir=tmp_path / "ledger", logs_dir=tmp_path / "logs"
    )
    stack = AlertStack(AlertsSpec(rules=tmp_path / "rules.yml"))
    try:
        fleet.start()
        stack.check()
        urls = stack.start(tmp_path, scrape_targets(None, fleet.scrapes(), None))
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"{urls['prometheus']}/api/v1/targets", timeout=5) as resp:
                active = json.loads(resp.read())["data"]["activeTargets"]
            health = {t["labels"].get("esp"): t["health"] for t in active}
            if health == {"primary": "up", "secondary": "up"} or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the next scrape (every second) is what changes the answer
        assert health == {"primary": "up", "secondary": "up"}, active
        assert {t["labels"]["job"] for t in active} == {"esp", "esp-2"}  # one per token
        config = (tmp_path / "alerts" / "prometheus.yml").read_text()
        assert "token-of-primary" in config and "token-of-secondary" in config
    finally:
        stack.stop()
        fleet.stop()
