"""Postfix end to end through ``mailstorm run``: an ESP outage with Postfix as the SUT loses nothing and
its queue depth on the timeline rises during the outage and drains after; behind a hanging ESP, what
Postfix still holds at the end of the drain is pending, not lost; Ctrl-C or SIGKILL of the run leaves no
Postfix process; the library's Postfix scenarios (long)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mailstorm.harness.targets.postfix import postfix_installed
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import (
    LIBRARY,
    ROOT,
    chaos_window,
    cleanup,
    console_outcomes,
    lost_and_counts,
    processes_of,
    report_md_outcomes,
    run_cli,
    start_run,
    wait_for_load,
)

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        postfix_installed() is None, reason="Postfix is not installed (apt-get install postfix)"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a Postfix instance needs root (set-permissions, chown)"),
]

OUTAGE = """\
name: postfix-outage-short
seed: 5
duration: 15s
drain_deadline: 40s
target: {kind: postfix, queue_sample_s: 0.5}
load:
  shape: {kind: steady, rate: 25}
chaos:
  - {at: 4s, for: 6s, name: esp-down, esp_outage: {mode: refuse}}
slo:
  max_lost: 0
"""


def postfix_processes_under(root: Path) -> list[psutil.Process]:
    """Live processes of any Postfix instance whose config dir is under ``root`` (by MAIL_CONFIG)."""
    found = []
    for p in psutil.process_iter():
        try:
            conf = p.environ().get("MAIL_CONFIG", "")
            if conf.startswith(str(root)) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            continue
    return found


def queue_depths(run_dir: Path) -> list[tuple[int, int]]:
    return [(r["t"], r["depth"]) for r in LedgerReader(run_dir / "ledger").records([Kind.SUT_QUEUE])]


def test_esp_outage_end_to_end_queue_rises_and_drains_nothing_lost(tmp_path):
    """mailstorm run with Postfix as the SUT and a 6 s ESP outage: exit 0, lost = 0, the sampled queue
    depth rises during the outage, peaks at its end and is back to 0 after it; no Postfix left."""
    path = tmp_path / "outage.yaml"
    path.write_text(OUTAGE)
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and accepted >= 300
    begin, end = chaos_window(run_dir, "esp-down")
    depths = queue_depths(run_dir)
    before = [d for t, d in depths if t < begin]
    during = [d for t, d in depths if begin <= t <= end]
    after = [d for t, d in depths if t > end]
    assert max(before) < 20, f"a queue before the outage: {before}"
    assert during[-1] >= 100 and during[-1] > during[0], f"not rising during the outage: {during}"
    assert after[-1] == 0 and min(after) == 0, f"not drained after the outage: {after}"
    assert postfix_processes_under(run_dir) == []


HANG = """\
name: postfix-esp-hang
seed: 6
duration: 10s
drain_deadline: 5s
target: {kind: postfix}
load:
  shape: {kind: steady, rate: 10}
chaos:
  - {at: 3s, for: 5s, name: esp-hang, esp_outage: {mode: hang}}
slo:
  max_lost: 0
"""


def _stopping(out: Path) -> bool:
    """The runner has begun to stop its parts (run.phase "stop" is on the timeline ledger)."""
    return any(b'"phase":"stop"' in p.read_bytes() for p in out.glob("*/ledger/timeline.jsonl"))


def test_postfix_behind_a_hanging_esp_holds_its_queue_pending_not_lost(tmp_path):
    """The ESP hangs from 3 s to 8 s of a 10 s load: Postfix's delivery agents wait on it (its SMTP
    timeouts are minutes) and log no deferral before the 5 s drain deadline. At the end of the drain the
    runner lists Postfix's queue into the ledger (sut.held): exactly the queue ids ``postqueue -j`` shows
    while the drain ends, mapped to their correlation ids through the maillog. Those messages are pending,
    none is lost, the run passes max_lost 0, and the console's last lines are report.md's outcome table."""
    path = tmp_path / "hang.yaml"
    path.write_text(HANG)
    out = tmp_path / "runs"
    postqueue = str(Path(postfix_installed()).parent / "postqueue")
    argv = [sys.executable, "-m", "mailstorm.cli", "run", str(path), "--out", str(out), "--quiet"]
    listing: list[str] | None = None  # queue ids in the last postqueue -j taken before the runner stopped
    with (tmp_path / "stderr.txt").open("w+") as err_file:
        with subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file) as run:
            try:
                deadline = time.monotonic() + 180
                while run.poll() is None:
                    assert time.monotonic() < deadline, "the run did not end"
                    confs = list(out.glob("*/postfix/conf"))
                    if confs and list(out.glob("*/ledger/load-*.jsonl")) and not _stopping(out):
                        q = subprocess.run(
                            [postqueue, "-c", str(confs[0]), "-j"], capture_output=True, text=True, timeout=30
                        )
                        # Taken wholly before the stop began (the queue directory goes with the instance).
                        if q.returncode == 0 and not _stopping(out):
                            listing = [json.loads(line)["queue_id"] for line in q.stdout.splitlines() if line]
                    time.sleep(0.3)  # the poll period of the test's own postqueue -j
            finally:
                run.kill()
        err_file.seek(0)
        err = err_file.read()
    assert run.returncode == 0, err
    (run_dir,) = out.glob("*")
    reader = LedgerReader(run_dir / "ledger")
    held = {r["queue_id"]: r["id"] for r in reader.records([Kind.SUT_HELD])}
    assert listing and sorted(held) == sorted(listing), (sorted(held), listing)
    info = re.compile(r" ([0-9A-F]{6,}): info: header X-Mailstorm-Id: .* mailstorm-id=(\S+)$")
    logged = dict(
        m.groups()
        for line in (run_dir / "postfix" / "maillog").read_text().splitlines()
        if (m := info.search(line))
    )
    assert held == {q: logged[q] for q in listing}
    deferred = {r["id"] for r in reader.records([Kind.SUT_DEFERRED])}
    at_esp = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])}
    assert not deferred and not set(held.values()) & at_esp
    live = console_outcomes(err)
    assert live == report_md_outcomes(run_dir)
    assert live["lost"] == 0 and live["pending"] == len(held) >= 40
    assert live["pending"] + live["delivered"] == live["submitted"] == 100
    assert postfix_processes_under(run_dir) == []


def test_ctrl_c_of_a_postfix_run_leaves_no_postfix(tmp_path):
    """SIGINT to mailstorm run mid-load (as Ctrl-C): it exits 130 and no process of its Postfix is left."""
    path = tmp_path / "long.yaml"
    path.write_text(OUTAGE.replace("duration: 15s", "duration: 60s"))
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "mailstorm.cli", "run", str(path), "--out", str(out), "--quiet"]
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as run:
        try:
            deadline = time.monotonic() + 90
            while not (list(out.glob("*/ledger/load-*.jsonl")) and postfix_processes_under(out)):
                assert run.poll() is None, run.stderr.read()
                assert time.monotonic() < deadline, "the run did not get to its load phase"
                time.sleep(0.2)
            run.send_signal(signal.SIGINT)
            assert run.wait(60) == 130
        finally:
            run.kill()
    assert postfix_processes_under(out) == []


def test_a_sigkilled_runner_leaves_no_postfix_within_10_s(tmp_path):
    """SIGKILL to mailstorm run mid-load: Postfix's master is no child of the runner (it detaches), so the
    watchdog ends it: within 10 s no process of the instance or of the run is left, and its private spool
    in /tmp is gone."""
    path = tmp_path / "long.yaml"
    path.write_text(OUTAGE.replace("duration: 15s", "duration: 60s"))
    out, err = tmp_path / "runs", tmp_path / "stderr.txt"
    run = start_run(path, out, err)
    try:
        run_dir = wait_for_load(run, out, err)
        assert postfix_processes_under(out)
        spool = (run_dir / "postfix" / "spool").resolve()
        assert spool.is_dir()
        run.kill()
        run.wait()
        deadline = time.monotonic() + 10
        while (postfix_processes_under(out) or processes_of(out)) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the process table
        assert postfix_processes_under(out) == [] and processes_of(out) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert not spool.exists()
    assert "ended Postfix instance" in (run_dir / "logs" / "watchdog.log").read_text()
    assert cleanup(out).stdout == "nothing to clean up\n"


@pytest.mark.long
@pytest.mark.parametrize("name", ["postfix-esp-outage", "postfix-throttled"])
def test_library_postfix_scenarios_pass(tmp_path, name):
    """The library's Postfix scenarios run unedited, pass, and lose nothing: a message not at the ESP by
    the drain deadline is one Postfix still holds (deferred), and the report counts it pending, not lost.
    (Seen once in postfix-throttled: qmgr logged "skipped, still being delivered" for 3 throttled
    messages with 1 s backoff and queue_run_delay, and held them past the 90 s deadline.)"""
    code, run_dir, err = run_cli(LIBRARY / f"{name}.yaml", tmp_path / "runs", timeout=600)
    assert code == 0, err
    not_at_esp, accepted, _ = lost_and_counts(run_dir)
    outcomes = json.loads((run_dir / "report.json").read_text())["outcomes"]
    deferred = {r["id"] for r in LedgerReader(run_dir / "ledger").records([Kind.SUT_DEFERRED])}
    assert accepted > 0 and outcomes["lost"] == 0
    assert not_at_esp <= deferred and outcomes["pending"] == len(not_at_esp)
    assert max(d for _, d in queue_depths(run_dir)) > 0
    assert postfix_processes_under(run_dir) == []


SLOW_RETRY = """\
name: postfix-slow-retry
seed: 5
duration: 12s
drain_deadline: 5s
target: {kind: postfix, minimal_backoff_s: 300, maximal_backoff_s: 4000, queue_run_delay_s: 300}
load:
  shape: {kind: steady, rate: 20}
chaos:
  - {at: 3s, for: 4s, name: esp-down, esp_outage: {mode: refuse}}
slo:
  max_lost: 0
"""


@pytest.mark.long
def test_postfix_default_retry_timing_leaves_mail_pending_not_lost(tmp_path):
    """With Postfix's own slow retries, mail queued by an ESP outage is still queued at the drain deadline:
    the maillog's sut.deferred records make it pending in the report, and nothing counts as lost."""
    path = tmp_path / "slow.yaml"
    path.write_text(SLOW_RETRY)
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    outcomes = json.loads((run_dir / "report.json").read_text())["outcomes"]
    assert outcomes["lost"] == 0 and outcomes["pending"] > 0
    assert outcomes["pending"] + outcomes["delivered"] == outcomes["submitted"]
