"""Several ESPs in one run, end to end through ``mailstorm run``: the library's esp-failover (the primary
refuses connections for 15 s) with the reference pipeline (failover after 3 consecutive failed attempts,
a trial message through the primary every second) and with Postfix (the secondary as
``smtp_fallback_relay``). Nothing is lost, each ESP's own ledger shows the mail moving to the secondary
and back, and the report gives the failover time, measured here against the pipeline's threshold."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from mailstorm.harness.scenario import load_scenario
from mailstorm.harness.targets.postfix import postfix_installed
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import chaos_window, lost_and_counts, run_cli

LIBRARY = Path(__file__).resolve().parents[2] / "scenarios" / "library"
SCENARIO = LIBRARY / "esp-failover.yaml"
NS = 1_000_000_000


def _check(run_dir: Path, code: int, err: str, *, failover_within_s: float, failback_within_s: float) -> dict:
    assert code == 0, err
    not_at_esp, accepted, _ = lost_and_counts(run_dir)
    assert accepted > 0 and not not_at_esp
    files = {p.name for p in (run_dir / "ledger").glob("esp-*.jsonl")}
    assert files == {"esp-primary-smtp-0.jsonl", "esp-secondary-smtp-0.jsonl"}
    begin, end = chaos_window(run_dir, "primary-down")
    at = {
        name: sorted(
            r["t"] for r in LedgerReader(run_dir / "ledger").records([Kind.ESP_ACCEPTED]) if r["src"] == src
        )
        for name, src in (("primary", "esp-primary-smtp-0"), ("secondary", "esp-secondary-smtp-0"))
    }
    # The primary took nothing while it refused connections; the secondary took the mail meanwhile; the
    # primary took it again after.
    assert not [t for t in at["primary"] if begin + NS // 2 < t < end]
    assert [t for t in at["secondary"] if begin < t < end]
    assert [t for t in at["primary"] if t > end]
    report = json.loads((run_dir / "report.json").read_text())
    moved = report["failover"]
    assert moved["esps"] == ["primary", "secondary"]
    (fault,) = moved["faults"]
    assert (fault["name"], fault["esp"], fault["via"]) == ("primary-down", "primary", "secondary")
    assert fault["failover_s"] is not None and fault["failover_s"] <= failover_within_s, fault
    assert fault["failback_s"] is not None and fault["failback_s"] <= failback_within_s, fault
    assert sum(moved["accepted"].values()) == len(at["primary"]) + len(at["secondary"])
    assert report["outcomes"]["duplicated"] >= moved["delivered_by_several"]
    assert "Failover after" in (run_dir / "report.md").read_text()
    return fault


def test_esp_failover_with_the_reference_pipeline(tmp_path):
    """The threshold: failover_after consecutive failed attempts. At the scenario's rate they take
    failover_after / rate seconds of arrivals; the failed messages' retries (backoff_base_s 0.2 s, jittered)
    and the next arrivals then go to the secondary. Bound: that, plus 1 s of slack for a loaded machine.
    Failback: a trial message every failback_probe_s, so within that plus 1 s."""
    scenario = load_scenario(SCENARIO)
    target, rate = scenario.target, scenario.load.shape.rate
    code, run_dir, err = run_cli(SCENARIO, tmp_path / "runs", timeout=180)
    fault = _check(
        run_dir,
        code,
        err,
        failover_within_s=target.failover_after / rate + target.backoff_base_s + 1.0,
        failback_within_s=target.failback_probe_s + 1.0,
    )
    assert (
        "relay 0 -> relay 1: 3 consecutive failed attempts"
        in (run_dir / "logs" / "reference-0.log").read_text()
    )
    print(f"reference pipeline: failover {fault['failover_s']} s, failback {fault['failback_s']} s")


@pytest.mark.postfix
@pytest.mark.skipif(postfix_installed() is None, reason="Postfix is not installed (apt-get install postfix)")
@pytest.mark.skipif(os.geteuid() != 0, reason="a Postfix instance needs root (set-permissions, chown)")
def test_esp_failover_with_postfix_smtp_fallback_relay(tmp_path):
    """Postfix tries the smtp_fallback_relay within the same delivery when the relayhost refuses the
    connection, and the relayhost first on every delivery: failover and failback within a second."""
    data = yaml.safe_load(SCENARIO.read_text())
    data["target"] = {
        "kind": "postfix",
        "minimal_backoff_s": 1,
        "maximal_backoff_s": 2,
        "queue_run_delay_s": 1,
    }
    path = tmp_path / "esp-failover-postfix.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, run_dir, err = run_cli(path, tmp_path / "runs", timeout=180)
    fault = _check(run_dir, code, err, failover_within_s=1.0, failback_within_s=1.0)
    main_cf = (run_dir / "postfix" / "conf" / "main.cf").read_text()
    secondary = json.loads((run_dir / "run.json").read_text())["esps"][1]["smtp"]
    assert f"smtp_fallback_relay = [{secondary.replace(':', ']:')}" in main_cf
    print(f"postfix: failover {fault['failover_s']} s, failback {fault['failback_s']} s")


NETWORK_FAILOVER = """\
name: network-failover
seed: 7
duration: 10s
drain_deadline: 30s
target: {kind: reference, failover_after: 3, failback_probe_s: 1}
esps:
  - {name: primary}
  - {name: secondary}
load:
  shape: {kind: steady, rate: 20}
chaos:
  - {at: 3s, for: 4s, name: primary-cut, esp: primary, network: {type: reset, on: [smtp]}}
slo:
  max_lost: 0
"""


def test_a_network_step_aimed_at_the_primary_sends_the_mail_through_the_secondarys_front(tmp_path):
    """With two ESPs the chaos proxy fronts both, and the SUT relays to each through its front: a reset
    toxic on the primary's paths alone (``esp: primary``) cuts only the primary's SMTP front, the
    reference pipeline fails over to the secondary, which takes the mail meanwhile; nothing is lost."""
    path = tmp_path / "network-failover.yaml"
    path.write_text(NETWORK_FAILOVER)
    code, run_dir, err = run_cli(path, tmp_path / "runs", timeout=180)
    assert code == 0, err
    not_at_esp, accepted, _ = lost_and_counts(run_dir)
    assert accepted > 0 and not not_at_esp
    info = json.loads((run_dir / "run.json").read_text())
    assert set(info["proxy"]) == {"smtp@primary", "smtp@secondary"}
    reader = LedgerReader(run_dir / "ledger")
    acted = list(reader.records([Kind.PROXY_ACTED]))
    assert acted and {r["path"] for r in acted} == {"smtp@primary"}
    begin, end = chaos_window(run_dir, "primary-cut")
    secondary = [r["t"] for r in reader.records([Kind.ESP_ACCEPTED]) if r["src"] == "esp-secondary-smtp-0"]
    assert [t for t in secondary if begin < t < end], "the secondary took nothing while the primary was cut"
    (fault,) = json.loads((run_dir / "report.json").read_text())["failover"]["faults"]
    assert (fault["name"], fault["esp"], fault["via"]) == ("primary-cut", "primary", "secondary")
