"""The load side end to end: Locust (own subprocesses, via LoadRun) against a real fake ESP process."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from mailstorm.errors import HarnessError
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port
from mailstorm.scenarios.launch import PROJECT_ROOT, LoadRun
from mailstorm.scenarios.model import LoadSpec
from tests.scenarios.conftest import accepted_ids, smtp_endpoint


def test_steady_rate_is_achieved_within_five_percent(esp, run_load):
    """At a target of 200 msg/s for 20 s the achieved arrival rate is within 5% of the target (and within
    10% in every second), and every accepted submission is in the fake ESP's ledger under its
    correlation id."""
    spec = {"shape": {"kind": "steady", "rate": 200}, "duration_s": 20, "max_connections": 50}
    res = run_load(spec, smtp_endpoint(esp))
    assert res.rc == 0
    assert res.dropped_count == 0
    t0 = min(r["intended"] for r in res.submits)
    span = (max(r["start"] for r in res.submits) - t0) / 1e9
    achieved = len(res.submits) / max(span, 19.0)
    assert abs(achieved - 200) / 200 <= 0.05, achieved
    # And no second is starved or flooded (10%: a scheduling hiccup may move a few across a boundary).
    per_s = res.per_second("start")
    assert all(abs(n - 200) <= 20 for s, n in per_s.items() if s < 20), per_s
    ok = {r["id"] for r in res.submits if r["ok"]}
    assert len(ok) == len(res.submits) == 4000
    assert [(r["planned"], r["shape"]) for r in res.started] == [(4000, "steady")]
    assert res.offered == 4000
    assert set(accepted_ids(esp)) == ok


def test_spike_is_visible_per_second_in_the_ledger(esp, run_load):
    """A spike shape (50/s, 4x from 3 s for 3 s) shows in the ledger's per-second counts: ~50 before,
    ~200 during, ~50 after, with every intended time in the second the shape put it."""
    shape = {"kind": "spike", "base_rate": 50, "factor": 4, "at_s": 3, "for_s": 3}
    res = run_load({"shape": shape, "duration_s": 9, "max_connections": 40}, smtp_endpoint(esp))
    assert res.rc == 0 and res.dropped_count == 0
    by_intent = res.per_second("intended")
    assert by_intent == {0: 50, 1: 50, 2: 50, 3: 200, 4: 200, 5: 200, 6: 50, 7: 50, 8: 50}
    by_start = res.per_second("start")
    before = [by_start.get(s, 0) for s in (0, 1, 2)]
    during = [by_start.get(s, 0) for s in (3, 4, 5)]
    after = [by_start.get(s, 0) for s in (6, 7, 8)]
    assert min(during) >= 3 * max(before + after), by_start
    assert sum(r["ok"] for r in res.submits) == 900


def test_slow_esp_is_seen_from_the_intended_time_rate_kept(start_esp, run_load):
    """With 500 ms of latency at DATA and enough connections, the generator keeps the arrival rate
    (within 5%) and every latency measured from the intended time is >= 500 ms."""
    esp = start_esp(faults=[{"type": "latency", "phase": "data", "ms": 500}])
    res = run_load(
        {"shape": {"kind": "steady", "rate": 40}, "duration_s": 5, "max_connections": 60}, smtp_endpoint(esp)
    )
    assert res.rc == 0 and res.dropped_count == 0
    assert len(res.submits) == 200
    lat = [(r["end"] - r["intended"]) / 1e6 for r in res.submits]
    assert min(lat) >= 500, min(lat)
    starts = sorted(r["start"] for r in res.submits)
    achieved = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1e9)
    assert abs(achieved - 40) / 40 <= 0.05, achieved


def test_coordinated_omission_cannot_hide_a_slow_esp(start_esp, run_load):
    """With 500 ms of latency at DATA and too few connections to keep up (4 sessions ~ 8 msg/s for a
    target of 40/s), nothing is hidden: every offered arrival is either submitted or counted as
    dropped, latency from the intended time includes the wait for a free connection (it grows well past
    the ESP's 500 ms), and the start times show the generator fell behind rather than the schedule
    silently sliding."""
    esp = start_esp(faults=[{"type": "latency", "phase": "data", "ms": 500}])
    spec = {"shape": {"kind": "steady", "rate": 40}, "duration_s": 5, "max_connections": 4, "max_lag_s": 1.0}
    res = run_load(spec, smtp_endpoint(esp))
    assert res.rc == 0
    assert len(res.submits) + res.dropped_count == 200  # offered = sent + dropped, exactly
    assert res.dropped_count >= 100
    lat = sorted((r["end"] - r["intended"]) / 1e6 for r in res.submits)
    assert lat[0] >= 500
    # Queueing for a free session shows: the slow half waited up to max_lag_s on top of the 500 ms.
    assert lat[len(lat) // 2] >= 900, lat
    # A closed-loop tool would report ~500 ms here; the start-to-end time hides the wait.
    service = sorted((r["end"] - r["start"]) / 1e6 for r in res.submits)
    assert service[len(service) // 2] < lat[len(lat) // 2] - 300
    # Drops are recorded as they happen, one record per second of intent, across the run.
    assert len({r["intended"] // 1_000_000_000 for r in res.dropped}) >= 3


def test_two_workers_write_one_merged_ledger_matching_the_esp(esp, run_load):
    """Master + 2 local workers: two ledger files in one directory, ids unique across them, the offered
    total split exactly, and the accepted ids equal what the fake ESP accepted."""
    res = run_load(
        {"shape": {"kind": "steady", "rate": 100}, "duration_s": 4, "workers": 2, "max_connections": 20},
        smtp_endpoint(esp),
    )
    assert res.rc == 0
    assert sorted(p.name for p in res.ledger_dir.glob("load-*.jsonl")) == ["load-0.jsonl", "load-1.jsonl"]
    ids = [r["id"] for r in res.submits]
    assert len(ids) == len(set(ids)) == 400
    assert collections.Counter(r["worker"] for r in res.submits) == {0: 200, 1: 200}
    assert sorted((r["worker"], r["planned"]) for r in res.started) == [(0, 200), (1, 200)]
    assert sorted(accepted_ids(esp)) == sorted(r["id"] for r in res.submits if r["ok"])


def test_remote_worker_ships_its_ledger_to_the_master(esp, tmp_path):
    """A worker joined with `mailstorm worker --master HOST` (no access to the run directory) gets the
    spec from the master, keeps a local spool, and its records land in the run's ledger through the
    master, identical to the spool; with the local worker, ids are unique and match the ESP."""
    port = free_port()
    spec = LoadSpec.model_validate(
        {"shape": {"kind": "steady", "rate": 50}, "duration_s": 4, "remote_workers": 1, "master_port": port}
    )
    ledger = tmp_path / "ledger"
    lr = LoadRun(spec, smtp_endpoint(esp), ledger, run_id="rw", seed=3, log_dir=tmp_path / "logs").start()
    spool = tmp_path / "spool"
    # As an installed `mailstorm` would find its packages, from anywhere (cwd is not the checkout).
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "mailstorm.cli",
        "worker",
        "--master",
        "127.0.0.1",
        "--master-port",
        str(port),
    ]
    with (tmp_path / "remote-worker.log").open("wb") as log:
        worker = subprocess.Popen(
            [*cmd, "--spool", str(spool)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 90
            while lr.alive() and time.monotonic() < deadline:
                assert worker.poll() in (None, 0), (tmp_path / "remote-worker.log").read_text()[-2000:]
                time.sleep(0.2)  # polling two processes' state, not standing in for a readiness check
            assert lr.wait(5) == 0
            assert worker.wait(30) == 0
        finally:
            lr.stop()
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    files = sorted(p.name for p in ledger.glob("load-*.jsonl"))
    assert files == ["load-0.jsonl", "load-1.jsonl"]
    (spooled,) = list(spool.glob("load-*.jsonl"))
    assert (ledger / spooled.name).read_bytes() == spooled.read_bytes()
    submits = list(LedgerReader(ledger).records([Kind.LOAD_SUBMIT]))
    ids = [r["id"] for r in submits]
    assert len(ids) == len(set(ids)) == 200
    assert sorted(accepted_ids(esp)) == sorted(r["id"] for r in submits if r["ok"])


def test_closed_model_users_send_and_wait_over_two_endpoints(start_esp, run_load):
    """The closed model: 3 users, 0.1 s wait, 2 s: each user's submissions follow one another (intended
    is its own start), bounded by the duration, all accepted; the users' connections are spread
    round-robin over the two endpoints given (two fake ESPs here)."""
    a, b = start_esp(), start_esp()
    endpoints = smtp_endpoint(a) + smtp_endpoint(b)
    res = run_load({"shape": {"kind": "closed", "users": 3, "wait_s": 0.1}, "duration_s": 2}, endpoints)
    assert res.rc == 0 and res.dropped_count == 0 and res.offered is None
    assert all(r["intended"] == r["start"] for r in res.submits)
    # ~20 per user at most (2 s / 0.1 s wait), at least a handful each even on a busy machine
    assert 15 <= len(res.submits) <= 66, len(res.submits)
    by_target = collections.Counter(r["target"] for r in res.submits)
    assert set(by_target) == {f"127.0.0.1:{a.smtp_port}", f"127.0.0.1:{b.smtp_port}"}
    assert sorted(accepted_ids(a) + accepted_ids(b)) == sorted(r["id"] for r in res.submits)


def test_stop_mid_run_leaves_a_consistent_ledger(start_esp, tmp_path):
    """stop() during a run ends every Locust process promptly; submissions cut short are recorded
    (phase 'stop'), never lost, and the ids stay unique."""
    esp = start_esp(faults=[{"type": "latency", "phase": "data", "ms": 300}])
    spec = LoadSpec.model_validate({"shape": {"kind": "steady", "rate": 50}, "duration_s": 60, "workers": 2})
    ledger = tmp_path / "ledger"
    lr = LoadRun(spec, smtp_endpoint(esp), ledger, run_id="st", seed=1, log_dir=tmp_path / "logs").start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and LedgerReader(ledger).count(Kind.LOAD_SUBMIT) < 50:
        time.sleep(0.1)  # polling the ledger for progress, not waiting in place of a check
    assert lr.alive()
    t = time.monotonic()
    lr.stop()
    assert time.monotonic() - t < 12
    assert not lr.alive()
    submits = list(LedgerReader(ledger).records([Kind.LOAD_SUBMIT]))
    ids = [r["id"] for r in submits]
    assert len(ids) == len(set(ids)) >= 50
    assert any(r["phase"] == "stop" and r["code"] is None for r in submits)  # in flight at 300 ms each
    accepted = set(accepted_ids(esp))
    assert {r["id"] for r in submits if r["ok"]} <= accepted


def test_a_dead_worker_ends_the_load_with_an_error_naming_it(esp, tmp_path):
    """If a local worker dies mid-run (SIGKILL), alive() turns false and wait() stops the rest and
    raises an error naming that worker; the surviving worker's in-flight submissions are recorded."""
    spec = LoadSpec.model_validate({"shape": {"kind": "steady", "rate": 40}, "duration_s": 60, "workers": 2})
    ledger = tmp_path / "ledger"
    lr = LoadRun(spec, smtp_endpoint(esp), ledger, run_id="dw", seed=1, log_dir=tmp_path / "logs").start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and LedgerReader(ledger).count(Kind.LOAD_SUBMIT) < 20:
            time.sleep(0.1)  # polling the ledger for progress
        os.kill(lr.pids["locust-worker-1"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while lr.alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # polling the process state
        assert not lr.alive()
        with pytest.raises(HarnessError, match=r"locust-worker-1 exited with -9"):
            lr.wait(30)
        assert not any(_running(pid) for pid in lr.pids.values())
    finally:
        lr.stop()
    ids = [r["id"] for r in LedgerReader(ledger).records([Kind.LOAD_SUBMIT])]
    assert len(ids) == len(set(ids)) >= 20


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (psutil: the status the kernel reports)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
