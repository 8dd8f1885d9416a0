""" "Fail the first try, accept the retry" end to end through ``mailstorm run``: a reply fault scoped to
``attempts: [1]`` makes the reference pipeline (and Postfix) retry every message exactly once; each is
attempted exactly twice at the ESP and delivered once, and the run passes with nothing lost."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from mailstorm.harness.targets.postfix import postfix_installed
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import lost_and_counts, run_cli

FIRST_TRY = """\
name: first-try-{kind}
seed: 11
duration: 4s
# Postfix defers a queue file its delivery agent still holds locked by 60 s (qmgr_active.c): with
# 1-2 s backoffs a loaded machine meets that now and then; the drain outlasts it.
drain_deadline: 90s
target: {target}
esp:
  faults:
    - {{name: first-try, type: reply, phase: eod, reply: "451 4.3.0 Try again later", attempts: [1]}}
load:
  shape: {{kind: steady, rate: 10}}
slo:
  max_lost: 0
  max_pending: 0  # a message still queued at the end fails the run, with the drain's reason in err
"""


def attempts_per_message(run_dir: Path) -> tuple[Counter[str], Counter[str]]:
    """Per correlation id: the ESP's refusals by the fault at eod, and its acceptances."""
    reader = LedgerReader(run_dir / "ledger")
    refused = Counter(r["id"] for r in reader.records([Kind.ESP_REPLIED]) if r["fault"] == "first-try")
    kept = Counter(r["id"] for r in reader.records([Kind.ESP_ACCEPTED]))
    return refused, kept


def check_first_try_run(tmp_path: Path, kind: str, target: str) -> None:
    path = tmp_path / "first-try.yaml"
    path.write_text(FIRST_TRY.format(kind=kind, target=target))
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    lost, submitted, _ = lost_and_counts(run_dir)
    assert lost == set() and submitted >= 30
    refused, kept = attempts_per_message(run_dir)
    assert set(refused) == set(kept) and len(kept) == submitted
    assert set(refused.values()) == {1} and set(kept.values()) == {1}  # two tries each, one delivery


def test_first_attempt_only_through_the_reference_pipelines_retry(tmp_path):
    """The reference pipeline: every message refused 451 once, retried once, delivered once."""
    check_first_try_run(tmp_path, "reference", "{kind: reference, backoff_base_s: 0.2, backoff_max_s: 0.5}")


@pytest.mark.postfix
@pytest.mark.skipif(postfix_installed() is None, reason="Postfix is not installed (apt-get install postfix)")
@pytest.mark.skipif(os.geteuid() != 0, reason="a Postfix instance needs root (set-permissions, chown)")
def test_first_attempt_only_through_postfix(tmp_path):
    """Postfix as the SUT (1-2 s backoff): every message deferred once, delivered on its retry, once."""
    check_first_try_run(tmp_path, "postfix", "{kind: postfix}")
