"""The pool target: reference pipelines behind a real HAProxy (Debian's haproxy), end to end through
`mailstorm run`: HAProxy takes a SIGKILLed member out (its stats socket says DOWN within its health
checks' reach), sends it nothing more until it is back, and the report says so per member."""

from __future__ import annotations

import json
import os
import shutil
import smtplib
import tempfile
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

import mailstorm.reports
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.haproxy import haproxy_installed
from mailstorm.harness.targets.base import TargetContext
from mailstorm.harness.targets.pool import PoolSpec, PoolTarget
from mailstorm.harness.targets.postfix import postfix_installed
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import chaos_window, processes_of, run_cli

pytestmark = pytest.mark.skipif(
    haproxy_installed() is None, reason="HAProxy is not installed (apt-get install haproxy)"
)

INTER_MS, FALL = 200, 2

REPORT_SCHEMA = Path(mailstorm.reports.__file__).parent / "schema" / "report.schema.json"


def test_haproxy_ejects_a_sigkilled_member_end_to_end(tmp_path):
    """Two members at 20 msg/s; member 1 SIGKILLed at 3 s, restarted at 7 s. HAProxy's stats show it
        DOWN within fall x inter (plus a poll and a check's timeout), member 1 accepts nothing while it is
        out, the other carries on, HAProxy puts it back after the restart, nothing accepted is lost, and no
    HAProxy outlives the run."""
    scenario = {
        "name": "pool-e2e",
        "seed": 5,
        "duration": "10s",
        "drain_deadline": "30s",
        "target": {"kind": "pool", "members": 2, "check_interval_ms": INTER_MS, "fall": FALL},
        "load": {"shape": {"kind": "steady", "rate": 20}},
        "chaos": [
            {"at": "3s", "for": "4s", "name": "crash", "target": {"action": "kill", "params": {"member": 1}}}
        ],
    }
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump(scenario))
    code, run_dir, stderr = run_cli(path, tmp_path / "runs")
    assert code == 0, stderr
    figures = json.loads((run_dir / "report.json").read_text())
    jsonschema.validate(figures, json.loads(REPORT_SCHEMA.read_text()))
    pool = figures["pool"]
    (ejection,) = pool["ejections"]
    assert ejection["member"] == 1 and ejection["action"] == "kill"
    assert ejection["ejected_after_s"] is not None
    assert ejection["ejected_after_s"] <= (FALL + 1) * INTER_MS / 1000 + 1.0, ejection
    assert ejection["back_after_s"] is not None  # the restart brought it back into rotation
    assert figures["outcomes"]["lost"] == 0

    reader = LedgerReader(run_dir / "ledger")
    states = [r for r in reader.records([Kind.POOL_SERVER]) if r["member"] == 1]
    kill, restart = chaos_window(run_dir, "crash")
    down = next(r["t"] for r in states if r["t"] >= kill and r["status"] == "DOWN")
    up = next(r["t"] for r in states if r["t"] > down and r["status"] == "UP")
    took = [r["t"] for r in reader.records([Kind.SUT_ACCEPTED]) if r["src"] == "sut-m1"]
    assert took and not [t for t in took if down <= t < restart], (
        "member 1 accepted mail while HAProxy had it out"
    )
    assert (
        up > restart
    )  # back in rotation after the restart (the load's open connections stay where they are)
    other = [r["t"] for r in reader.records([Kind.SUT_ACCEPTED]) if r["src"] == "sut-m0"]
    assert [t for t in other if down <= t < restart], "member 0 carried the load meanwhile"
    shares = [m["share"] for m in pool["members"]]
    assert abs(sum(shares) - 1) < 1e-3 and shares[0] > shares[1] > 0
    assert [m["accepted"] for m in pool["members"]] == [len(other), len(took)]
    assert "| Pool member |" in (run_dir / "report.md").read_text()
    assert processes_of(run_dir) == []


def test_bad_member_and_param_are_refused_before_anything_starts(tmp_path):
    """An unknown member kind, a member index out of range, an action the member kind lacks: each is a
    one-line error and exit 2 from `mailstorm validate`."""
    from tests.harness.test_scenario_broken import mailstorm

    base = {"name": "p", "duration": "5s", "load": {"shape": {"kind": "steady", "rate": 1}}}

    def kill(params: dict) -> list[dict]:
        return [{"at": "1s", "target": {"action": "kill", "params": params}}]

    cases = {
        "kind": ({"kind": "pool", "member": {"kind": "nope"}}, [], "unknown member kind 'nope'"),
        "index": ({"kind": "pool", "members": 2}, kill({"member": 2}), "member must be 0..1"),
        "action": ({"kind": "pool"}, [{"at": "1s", "target": "flush"}], "has no action 'flush'"),
    }
    for name, (target, chaos, why) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "target": target, "chaos": chaos}))
        proc = mailstorm("validate", str(path))
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, (name, proc.stderr)
        assert why in proc.stderr, (name, proc.stderr)


def test_actions_are_the_member_kinds_and_the_balancers():
    target = PoolTarget(PoolSpec(member={"kind": "postfix"}))
    assert {"flush", "snapshot", "kill", "disable", "enable"} <= target.actions()


@pytest.mark.postfix
def test_a_pool_of_postfix_instances(tmp_path):
    """Two throwaway Postfix instances behind HAProxy: round robin gives each its share (each writes its
    own ledger source), a SIGKILLed master is taken out (a pool.server DOWN record) and its restart is
    taken back."""
    if postfix_installed() is None or os.geteuid() != 0:
        pytest.skip("needs Postfix installed and root")
    run_dir = Path(tempfile.mkdtemp(prefix="mailstorm-pool-", dir="/tmp"))  # reachable by the postfix user
    run_dir.chmod(0o755)
    ledger = run_dir / "ledger"
    esp = EspProcess(ledger, log_path=tmp_path / "esp.log").start()
    target = PoolTarget(PoolSpec(member={"kind": "postfix", "queue_sample_s": 0}))
    ctx = TargetContext(run_dir=run_dir, ledger_dir=ledger, seed=1, esp_smtp=(esp.smtp_host, esp.smtp_port))
    try:
        (endpoint,) = target.start(ctx)
        for n in range(6):  # one connection each: round robin alternates
            with smtplib.SMTP(endpoint.host, endpoint.port, timeout=10) as smtp:
                smtp.sendmail("a@client.test", ["r@example.test"], f"X-Mailstorm-Id: pf-{n}\r\n\r\nhi\r\n")
        target.act("kill", member=1)
        reader = LedgerReader(ledger)
        deadline = time.monotonic() + 10
        while not [
            r for r in reader.records([Kind.POOL_SERVER]) if r["member"] == 1 and r["status"] == "DOWN"
        ]:
            assert time.monotonic() < deadline, "HAProxy never took the killed Postfix out"
            time.sleep(0.05)  # polling interval of the pool's own records
        assert "restarted" in target.act("restart", member=1)
        target.stop()
        took = Counter(r["src"] for r in reader.records([Kind.SUT_ACCEPTED]))
        assert took == {"sut-m0": 3, "sut-m1": 3}
    finally:
        target.stop()
        esp.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
