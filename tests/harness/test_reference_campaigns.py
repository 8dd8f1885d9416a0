"""The reference pipeline's campaigns, as a real process relaying to a real fake ESP: POST /campaigns
fans a list out (unsubscribed skipped, the campaign header on every message, a repeated trigger starts
nothing twice), refuses what it cannot read, and a SIGKILL in the middle of the fan-out resumes from the
checkpoint with every subscriber queued exactly once."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailstorm.harness.campaign import lists
from mailstorm.harness.targets.base import TargetContext
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import EspAccepted, Kind, LedgerReader
from mailstorm.ports import free_port

HOST = "127.0.0.1"


def start(tmp_path: Path, esp_port: int, esp_http: str | None = None) -> ReferenceTarget:
    target = ReferenceTarget(ReferenceTargetSpec(relay="http" if esp_http else "smtp"))
    ctx = TargetContext(
        run_dir=tmp_path / "run",
        ledger_dir=tmp_path / "run" / "ledger",
        seed=7,
        esp_smtp=(HOST, esp_port),
        esp_http=esp_http,
    )
    target.start(ctx)
    return target


def post(target: ReferenceTarget, body: dict) -> tuple[int, dict]:
    url = target.health_urls[0].replace("/health", "/campaigns")
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def write_list(path: Path, n: int, pct: float) -> tuple[set[str], set[str]]:
    rows = lists.generate(n, pct, seed=5)
    lists.write(path, rows)
    return {r[0] for r in rows if r[2] == lists.SUBSCRIBED}, {r[0] for r in rows if r[2] != lists.SUBSCRIBED}


def accepted(ledger_dir: Path) -> list[EspAccepted]:
    return [
        EspAccepted(**{k: v for k, v in r.items() if k != "k"})
        for r in LedgerReader(ledger_dir).records([Kind.ESP_ACCEPTED])
    ]


def wait_for(fn, timeout: float):
    deadline = time.monotonic() + timeout
    while not (got := fn()) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the ESP's ledger
    return got


@pytest.mark.parametrize("relay", ["smtp", "http"])
@pytest.mark.fake_esp(http_port=free_port())
def test_a_campaign_reaches_every_subscriber_once_with_its_header(tmp_path, fake_esp, relay):
    """Over SMTP and over the SendGrid API (relay: http), the header travels with every message."""
    subscribed, gone = write_list(tmp_path / "news.csv", 300, 5.0)
    target = start(tmp_path, fake_esp.smtp_port, fake_esp.http_url if relay == "http" else None)
    try:
        body = {
            "campaign_id": "news-7",
            "list_path": str(tmp_path / "news.csv"),
            "subject": "Hi",
            "from": "n@x.test",
        }
        assert post(target, body) == (202, {"campaign_id": "news-7", "status": "accepted", "recipients": 300})
        got = wait_for(lambda: len(accepted(fake_esp.ledger_dir)) >= len(subscribed), 30)
        assert got, "the campaign did not reach every subscriber in 30 s"
        assert post(target, body)[0] == 200  # known: starts nothing
        time.sleep(0.5)  # would a second fan-out have sent anything? (nothing to poll for: absence)
        got = accepted(fake_esp.ledger_dir)
        to = [a.to[0] for a in got]
        assert sorted(to) == sorted(subscribed) and not set(to) & gone
        assert {a.campaign for a in got} == {"news-7"}
    finally:
        target.stop()


def test_a_trigger_it_cannot_act_on_is_refused(tmp_path, fake_esp):
    target = start(tmp_path, fake_esp.smtp_port)
    try:
        assert post(target, {"campaign_id": "x", "list_path": str(tmp_path / "none.csv")})[0] == 422
        assert post(target, {"campaign_id": "bad id!"})[0] == 400
        assert post(target, {"campaign_id": "x"})[0] == 422
    finally:
        target.stop()


def test_a_sigkill_mid_fan_out_resumes_without_a_duplicate_or_a_gap(tmp_path):
    # Relaying to a closed port: nothing leaves, so the queue itself shows what the fan-out did.
    subscribed, _ = write_list(tmp_path / "big.csv", 40_000, 2.0)
    target = start(tmp_path, free_port())
    queue = tmp_path / "run" / "reference" / "queue-0.sqlite"
    inst = target._instances[0]
    try:
        assert post(target, {"campaign_id": "big", "list_path": str(tmp_path / "big.csv")})[0] == 202

        def checkpoint() -> int:
            conn = sqlite3.connect(f"file:{queue}?mode=ro", uri=True, timeout=2)
            try:
                return conn.execute("SELECT next_row FROM campaign").fetchone()[0]
            finally:
                conn.close()

        assert wait_for(lambda: checkpoint() > 0, 20), "no batch was committed"
        inst.proc.send_signal(signal.SIGKILL)
        inst.proc.wait()
        cut = checkpoint()
        assert 0 < cut < 40_000, f"the kill came after the fan-out (checkpoint {cut})"
        target.act("restart")
        conn = sqlite3.connect(f"file:{queue}?mode=ro", uri=True, timeout=2)
        try:
            done = wait_for(lambda: conn.execute("SELECT done FROM campaign").fetchone()[0], 30)
            assert done
            rcpts = [
                json.loads(r)[0]
                for (r,) in conn.execute("SELECT rcpts FROM queue WHERE corr LIKE 'campaign:%'")
            ]
        finally:
            conn.close()
        assert len(rcpts) == len(set(rcpts)) == len(subscribed)
        assert set(rcpts) == {s.lower() for s in subscribed}
    finally:
        target.stop()
