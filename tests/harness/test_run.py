"""End to end: `mailstorm run` against the reference pipeline, with real processes and real chaos.

Each test runs the CLI as a subprocess (as a user would), then judges from the run directory alone:
the ledgers must be complete (every arrival the schedule made is a submission or a counted drop), every
message the pipeline accepted must be at the ESP, and the exit code must follow the SLOs. Runs are kept
short (10-20 s of load) so the default suite stays quick; the full library scenarios are marked long.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mailstorm.harness.scenario import load_scenario
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.scenarios.shapes import arrival_times
from tests.harness.sut_support import start_run, wait_for_load

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "scenarios" / "library"
CLI = [sys.executable, "-m", "mailstorm.cli"]


def scenario_file(tmp_path: Path, name: str, body: str, *, duration: str = "12s", rate: int = 25) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nseed: 11\nduration: {duration}\ndrain_deadline: 40s\n"
        f"load:\n  shape: {{kind: steady, rate: {rate}}}\n{body}"
    )
    return path


def run(path: Path, tmp_path: Path, *args: str, timeout: float = 240) -> tuple[int, Path, str]:
    out = tmp_path / "runs"
    proc = subprocess.run(
        [*CLI, "run", str(path), "--out", str(out), "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    dirs = sorted(out.glob("*")) if out.exists() else []
    assert len(dirs) == 1, f"expected one run directory, got {dirs}: {proc.stderr}"
    return proc.returncode, dirs[0], proc.stderr


class Ledgers:
    """What a run directory's ledgers say, as the checks below need it."""

    def __init__(self, run_dir: Path) -> None:
        reader = LedgerReader(run_dir / "ledger")
        self.submits = list(reader.records([Kind.LOAD_SUBMIT]))
        self.dropped = sum(r.get("count", 1) for r in reader.records([Kind.LOAD_DROPPED]))
        self.accepted_ids = [r["id"] for r in self.submits if r["ok"]]
        self.esp = list(reader.records([Kind.ESP_ACCEPTED]))
        self.esp_ids = {r["id"] for r in self.esp}
        self.timeline = reader.merged(
            [Kind.RUN_STARTED, Kind.RUN_PHASE, Kind.CHAOS_BEGIN, Kind.CHAOS_END, Kind.ACTION, Kind.RUN_ENDED]
        )
        self.torn = reader.torn_lines

    @property
    def lost(self) -> set[str]:
        return set(self.accepted_ids) - self.esp_ids

    def window(self, name: str) -> tuple[int, int]:
        begin = next(r["t"] for r in self.timeline if r["k"] == Kind.CHAOS_BEGIN and r["name"] == name)
        end = next(r["t"] for r in self.timeline if r["k"] == Kind.CHAOS_END and r["name"] == name)
        return begin, end


def assert_complete(run_dir: Path, ledgers: Ledgers) -> None:
    """The load ledger holds every arrival of the schedule, and the run directory has its files."""
    scenario = load_scenario(run_dir / "scenario.yaml")
    expected = len(arrival_times(scenario.load.shape, scenario.duration))
    assert len(ledgers.submits) + ledgers.dropped == expected
    assert len({r["id"] for r in ledgers.submits}) == len(ledgers.submits), "an id was submitted twice"
    assert ledgers.accepted_ids, "the pipeline accepted nothing"
    assert ledgers.torn == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "done" and info["ended_ns"] > info["started_ns"]
    assert json.loads((run_dir / "slo.json").read_text())["max_lost"] == scenario.slo.max_lost
    kinds = [r["k"] for r in ledgers.timeline]
    assert kinds[0] == Kind.RUN_STARTED and kinds[-1] == Kind.RUN_ENDED


def test_smoke_scenario_passes(tmp_path):
    """The library's smoke scenario runs end to end, retries through the ESP's 451s, loses nothing."""
    code, run_dir, err = run(LIBRARY / "smoke.yaml", tmp_path)
    assert code == 0, err
    ledgers = Ledgers(run_dir)
    assert_complete(run_dir, ledgers)
    assert not ledgers.lost
    begin, end = ledgers.window("esp-451")
    refused = [r for r in LedgerReader(run_dir / "ledger").records([Kind.ESP_REPLIED]) if r["code"] == 451]
    assert refused and all(begin <= r["t"] <= end + 1e9 for r in refused)
    assert (run_dir / "report.json").exists()


@pytest.mark.parametrize("mode", ["refuse", "crash"])
def test_esp_outage_loses_nothing(tmp_path, mode):
    """During an ESP outage (refusing, or its process SIGKILLed and restarted) the pipeline keeps
    accepting; afterwards all it accepted reaches the ESP."""
    path = scenario_file(
        tmp_path,
        "outage",
        f"chaos:\n  - {{at: 3s, for: 6s, name: esp-down, esp_outage: {{mode: {mode}}}}}\n",
    )
    code, run_dir, err = run(path, tmp_path)
    assert code == 0, err
    ledgers = Ledgers(run_dir)
    assert_complete(run_dir, ledgers)
    assert not ledgers.lost
    begin, end = ledgers.window("esp-down")
    # Messages the pipeline took while the ESP was away were delivered after it came back.
    during = {r["id"] for r in ledgers.submits if r["ok"] and begin + 5e8 < r["end"] < end - 5e8}
    assert during
    first_at_esp = {r["id"]: r["t"] for r in sorted(ledgers.esp, key=lambda r: -r["t"])}
    assert all(first_at_esp[i] >= end - 5e8 for i in during)


def test_pipeline_killed_and_restarted_by_the_timeline_loses_nothing(tmp_path):
    """The pipeline SIGKILLed mid-run and restarted 2 s later by the timeline: nothing accepted is lost."""
    path = scenario_file(tmp_path, "crash", "chaos:\n  - {at: 4s, for: 2s, name: crash, target: kill}\n")
    code, run_dir, err = run(path, tmp_path)
    assert code == 0, err
    ledgers = Ledgers(run_dir)
    assert_complete(run_dir, ledgers)
    assert not ledgers.lost
    actions = [(r["what"], r["ok"]) for r in ledgers.timeline if r["k"] == Kind.ACTION]
    assert actions == [("kill", True), ("restart", True)]
    # The crash was real: while it was down the load's submissions failed.
    begin, end = ledgers.window("crash")
    assert any(not r["ok"] for r in ledgers.submits if begin < r["start"] < end)


def test_an_impossible_slo_exits_1(tmp_path):
    """A p95 end-to-end latency target no pipeline can meet makes the verdict fail: exit 1. (The run also
    probes the pipeline's own health and metrics URLs onto the timeline.)"""
    probes = "probes:\n  - {target: health, every: 0.5s}\n"
    probes += "  - {target: metrics, metric: mailstorm_sut_accepted}\n"
    path = scenario_file(
        tmp_path, "impossible", "slo: {max_lost: 0, p95_e2e_ms: 0.001}\n" + probes, duration="6s"
    )
    code, run_dir, err = run(path, tmp_path)
    assert code == 1, err
    assert json.loads((run_dir / "run.json").read_text())["verdict"] == "fail"
    polls = list(LedgerReader(run_dir / "ledger").records([Kind.PROBE]))
    health = [p for p in polls if p["name"] == "reference-health"]
    metrics = [p for p in polls if p["name"] == "reference-metrics"]
    assert len(health) >= 8 and all(p["ok"] for p in health)
    assert metrics and metrics[-1]["value"] > 0  # the pipeline's own count of what it accepted


def _descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


@pytest.mark.parametrize(
    ("sig", "code", "group"),
    [(signal.SIGINT, 130, False), (signal.SIGINT, 130, True), (signal.SIGTERM, 143, False)],
    ids=["sigint", "ctrl-c-to-the-group", "sigterm"],
)
def test_a_signal_mid_run_stops_every_child_and_keeps_the_run_readable(tmp_path, sig, code, group):
    """SIGINT or SIGTERM to the runner, or Ctrl-C (SIGINT to its whole process group, as a terminal sends
    it) mid-run: every child is gone within 10 s and the run directory is readable."""
    path = scenario_file(
        tmp_path, "interrupted", "chaos:\n  - {at: 1s, for: 20s, esp_outage: {mode: hang}}\n", duration="30s"
    )
    out = tmp_path / "runs"
    err_file = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [*CLI, "run", str(path), "--out", str(out), "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=err_file,
        start_new_session=True,  # our own group: the signal goes to the runner only, as a test can aim it
    )
    try:
        deadline = time.monotonic() + 60
        # The first load record is load.started; wait for a submission, so the signal lands mid-load.
        while not any(b'"k":"load.submit"' in p.read_bytes() for p in out.glob("*/ledger/load-*.jsonl")):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            assert time.monotonic() < deadline, "the load never started"
            time.sleep(0.1)  # polling the ledger for the load's first record
        children = _descendants(proc.pid)
        assert len(children) >= 3  # fake ESP, reference pipeline, Locust
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        signalled = time.monotonic()
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"still running 10 s after {sig.name}: {alive}"
        assert proc.wait(timeout=30) == code
        assert time.monotonic() - signalled < 40
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err_file.close()
    run_dir = next(out.glob("*"))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["reason"] == f"interrupted ({sig.name})"
    ledgers = Ledgers(run_dir)
    assert ledgers.torn == 0 and ledgers.submits
    assert ledgers.timeline[-1]["k"] == Kind.RUN_ENDED


def test_a_dead_esp_fails_the_run_with_exit_3(tmp_path):
    """The fake ESP dying mid-run (not by the timeline) stops the run: exit 3, nothing left running."""
    path = scenario_file(tmp_path, "esp-dies", "", duration="20s")
    out = tmp_path / "runs"
    err_file = (tmp_path / "stderr.txt").open("w")
    proc = subprocess.Popen(
        [*CLI, "run", str(path), "--out", str(out), "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=err_file,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        esp_pid = None
        while esp_pid is None or not list(out.glob("*/ledger/load-*.jsonl")):
            assert proc.poll() is None and time.monotonic() < deadline
            info_path = next(out.glob("*/run.json"), None)
            if info_path is not None:
                esp_pid = json.loads(info_path.read_text()).get("esp", {}).get("pid")
            time.sleep(0.1)  # polling run.json for the ESP's pid
        children = _descendants(proc.pid)
        os.killpg(esp_pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == 3
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
        assert "fake ESP died" in (tmp_path / "stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        err_file.close()


def test_a_target_that_dies_unexpectedly_fails_the_run_with_exit_1(tmp_path):
    """The reference pipeline SIGKILLed mid-run by someone else than the timeline is a finding about the
    SUT (TargetDied): the run stops, builds its reports and exits 1, nothing left running."""
    path = scenario_file(tmp_path, "sut-dies", "", duration="20s")
    out, err = tmp_path / "runs", tmp_path / "stderr.txt"
    run = start_run(path, out, err)
    try:
        run_dir = wait_for_load(run, out, err)
        children = _descendants(run.pid)
        (sut,) = [p for p in children if "mailstorm.harness.reference" in p.cmdline()]
        sut.kill()
        assert run.wait(timeout=60) == 1
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert "target 'reference' died unexpectedly" in err.read_text()
    assert (run_dir / "report.json").exists()


@pytest.mark.long
@pytest.mark.timeout(1200)  # soak: 10 min of load, 2 min of drain deadline
@pytest.mark.parametrize(
    "name",
    [
        "demo", "esp-outage", "spike", "slow-esp", "esp-throttling", "campaign", "capacity-ramp", "soak",
        "alerts-esp-outage",  # needs Debian's prometheus and prometheus-alertmanager (setup.sh --test)
    ],
)  # fmt: skip
def test_library_scenarios_hold_their_slos(tmp_path, name):
    """Each minute-long library scenario runs unedited against the reference pipeline and passes."""
    path = LIBRARY / f"{name}.yaml"
    scenario = load_scenario(path)
    code, run_dir, err = run(path, tmp_path, timeout=scenario.duration + scenario.drain_deadline + 180)
    assert code == 0, err
    ledgers = Ledgers(run_dir)
    assert_complete(run_dir, ledgers)
    assert not ledgers.lost
