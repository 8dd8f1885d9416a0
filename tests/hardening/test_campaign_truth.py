"""Truth against a known-broken campaign sender: a real ``mailstorm run`` whose campaign is triggered as a
command running tests.hardening.broken_campaign (it restarts from the top after a crash, forgets the
unsubscribes for one batch, skips a batch, mails one address not on the list) through the reference
pipeline to the fake ESP. The report's figures equal the sender's own truth, recipient by recipient."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mailstorm.harness.campaign import lists
from mailstorm.reports.campaign import OUTCOMES, analyze
from mailstorm.reports.store import open_run

ROOT = Path(__file__).resolve().parents[2]


def expected(sent: dict[str, int], emails: list[str], gone: np.ndarray) -> list[str]:
    out = []
    for email, unsub in zip(emails, gone, strict=True):
        n = sent.get(email, 0)
        if unsub:
            out.append("suppressed_sent" if n else "suppressed")
        else:
            out.append("missing" if n == 0 else "delivered" if n == 1 else "duplicated")
    return out


def test_the_report_equals_a_broken_senders_truth_recipient_by_recipient(tmp_path):
    truth = tmp_path / "truth.json"
    argv = [
        sys.executable, "-m", "tests.hardening.broken_campaign", "--list", "{list_path}",
        "--campaign", "{campaign_id}", "--smtp", "{target_host}:{target_port}", "--truth", str(truth),
        "--batch", "25", "--crash-after", "2", "--forget-unsubscribes", "5", "--skip-batch", "8",
        "--extra", "seed.list@example.org",
    ]  # fmt: skip
    scenario = tmp_path / "broken.yaml"
    scenario.write_text(
        json.dumps(
            {
                "name": "broken-campaign",
                "duration": "3s",
                "drain_deadline": "30s",
                "campaign": {
                    "id": "broken-1",
                    "recipients": 300,
                    "unsubscribed": "10%",
                    "at": "0.5s",
                    "trigger": {"via": "command", "argv": argv},
                },
            }
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailstorm.cli",
            "run",
            str(scenario),
            "--out",
            str(tmp_path / "runs"),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 1, done.stderr[-2000:]  # the campaign's SLOs are breached
    (run_dir,) = (tmp_path / "runs").iterdir()
    sent = json.loads(truth.read_text())
    emails, unsubscribed = lists.load(run_dir / "campaign" / "broken-1.csv")
    gone = np.asarray(unsubscribed, dtype=bool)
    want = expected(sent, emails, gone)
    with open_run(run_dir / "ledger") as store:
        (c,) = analyze(run_dir, store, {"broken-1": "header"}, 0, 0, [])
    got = [OUTCOMES[k] for k in c.outcome]
    wrong = [(e, w, g) for e, w, g in zip(emails, want, got, strict=True) if w != g]
    assert not wrong, wrong[:10]
    # Each bug left its mark (so the test cannot pass on a sender that did nothing wrong)...
    counts = {name: want.count(name) for name in OUTCOMES}
    subscribed_in = lambda batches: sum(not g for b in batches for g in gone[b * 25 : b * 25 + 25])  # noqa: E731
    assert counts["duplicated"] == subscribed_in([0, 1, 2])
    assert counts["suppressed_sent"] == int(gone[125:150].sum())
    assert counts["missing"] == subscribed_in([8])
    # ...and the report says the same, with the address off the list counted apart.
    report = json.loads((run_dir / "report.json").read_text())["campaign"][0]
    assert report["outcomes"] == counts and report["unexpected"] == 1
    failed = {s["name"] for s in json.loads((run_dir / "report.json").read_text())["slo"] if not s["passed"]}
    assert failed == {
        f"{n}[broken-1]" for n in ("max_campaign_missing", "max_campaign_duplicated", "max_suppressed_sent")
    }
