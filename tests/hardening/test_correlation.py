"""Correlation that breaks says so: `mailstorm run` against tests/hardening/broken_sut.py with
``--rewrite``, a relay that rebuilds every message (the X-Mailstorm-Id header stripped, the Message-ID
replaced by its own) as template-based pipelines do.

With the default header correlation no ESP acceptance carries a known id: the verdict must say
"correlation failed" and count those messages uncorrelated, never lost. With ``load.correlation:
recipient`` (the id plus-addressed into every envelope recipient, which a relay must keep) the same
relay, told also to drop and duplicate chosen messages, must be judged exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import run_cli

RATE, SECONDS = 20, 4
SUBMITTED = RATE * SECONDS


def _scenario(tmp_path: Path, name: str, *, correlation: str, drop: str = "", dup: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
name: {name}
seed: 4
duration: {SECONDS}s
drain_deadline: 3s
target:
  kind: process
  command: ["{{python}}", -m, tests.hardening.broken_sut, --listen, "{{host}}:{{port}}",
            --relay, "{{esp_host}}:{{esp_port}}", --ledger, "{{ledger_dir}}", --rewrite,
            --drop, "{drop}", --dup, "{dup}"]
  cwd: "{{mailstorm_root}}"
load:
  shape: {{kind: steady, rate: {RATE}}}
  correlation: {correlation}
slo:
  max_lost: 0
""")
    return path


def test_a_relay_that_rewrites_headers_fails_on_correlation_not_loss(tmp_path):
    """Every message reached the ESP rebuilt, so none carries a known id: the run fails with
    "correlation failed: 80 ESP acceptances carry no known id; the X-Mailstorm-Id header and Message-ID
    did not survive the pipeline", 80 messages uncorrelated and none lost (console and report agree)."""
    code, run_dir, err = run_cli(_scenario(tmp_path, "rewritten", correlation="header"), tmp_path / "runs")
    assert code == 1, err
    esp = list(LedgerReader(run_dir / "ledger").records([Kind.ESP_ACCEPTED]))
    assert len(esp) == SUBMITTED and all(r["id"].startswith("rebuilt-") for r in esp)

    report = json.loads((run_dir / "report.json").read_text())
    assert report["outcomes"]["uncorrelated"] == SUBMITTED
    assert report["outcomes"]["lost"] == 0 and report["details"]["esp_unmatched"] == SUBMITTED
    judged = {s["name"]: s for s in report["slo"]}
    assert judged["max_lost"]["passed"] is True
    assert judged["correlation"]["passed"] is False and judged["correlation"]["actual"] == SUBMITTED
    said = (
        f"correlation failed: {SUBMITTED} ESP acceptances carry no known id; the X-Mailstorm-Id header and "
        "Message-ID did not survive the pipeline"
    )
    assert said in judged["correlation"]["detail"]
    for text in (err, (run_dir / "report.md").read_text()):
        assert said in text and f"lost: {SUBMITTED}" not in text


def test_recipient_correlation_survives_the_rewrite_and_gives_exact_outcomes(tmp_path):
    """The same rebuilding relay, dropping messages 3 and 17 and relaying 5 twice: with the id in the
    envelope recipient every acceptance is matched, and the outcomes are exactly 2 lost, 1 duplicated,
    the rest delivered; nothing uncorrelated."""
    path = _scenario(tmp_path, "recipient", correlation="recipient", drop="3,17", dup="5")
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 1, err  # the two lost messages fail max_lost
    report = json.loads((run_dir / "report.json").read_text())
    assert report["outcomes"] == {
        "submitted": SUBMITTED,
        "delivered": SUBMITTED - 3,
        "duplicated": 1,
        "bounced": 0,
        "pending": 0,
        "lost": 2,
        "rejected": 0,
        "uncorrelated": 0,
    }
    assert report["details"]["esp_unmatched"] == 0
    reader = LedgerReader(run_dir / "ledger")
    by_arrival = {r["queue_id"]: r["id"] for r in reader.records([Kind.SUT_ACCEPTED])}
    at_esp = Counter(r["id"] for r in reader.records([Kind.ESP_ACCEPTED]))
    assert {n for n, cid in by_arrival.items() if at_esp[cid] == 0} == {3, 17}
    assert {n for n, cid in by_arrival.items() if at_esp[cid] == 2} == {5}
    assert "correlation failed" not in err
