"""The docker target end to end through ``mailstorm run``: the library's docker-restart scenario, the
reference pipeline in a container paused and restarted by the timeline, loses nothing and leaves no
container behind, also when the run is interrupted with Ctrl-C (long), or SIGKILLed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from mailstorm.errors import UserError
from mailstorm.harness.targets.docker import LABEL, docker_client
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import (
    LIBRARY,
    ROOT,
    cleanup,
    lost_and_counts,
    processes_of,
    run_cli,
    start_run,
    wait_for_load,
)


def _client_or_reason():
    try:
        return docker_client(), ""
    except UserError as exc:
        return None, str(exc)


CLIENT, WHY = _client_or_reason()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(CLIENT is None, reason=f"no dockerd: {WHY}")]


@pytest.mark.long
def test_library_docker_restart(tmp_path):
    """docker-restart: paused 5 s and restarted mid-run; the actions succeed, nothing accepted is lost,
    and no container of the run is left."""
    subprocess.run([sys.executable, str(ROOT / "docker" / "build_pyhost_image.py")], check=True, timeout=300)
    code, run_dir, err = run_cli(LIBRARY / "docker-restart.yaml", tmp_path / "runs")
    assert code == 0, err
    done = [(r["what"], r["ok"]) for r in LedgerReader(run_dir / "ledger").records([Kind.ACTION])]
    assert done == [("pause", True), ("resume", True), ("restart", True)]
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and accepted > 0
    assert CLIENT.containers.list(all=True, filters={"label": f"{LABEL}={run_dir.resolve()}"}) == []


@pytest.mark.long
def test_ctrl_c_of_a_docker_run_leaves_no_container(tmp_path):
    """SIGINT to mailstorm run mid-load (as Ctrl-C): it exits 130 and no container of the run is left."""
    subprocess.run([sys.executable, str(ROOT / "docker" / "build_pyhost_image.py")], check=True, timeout=300)
    out = tmp_path / "runs"
    scenario = str(LIBRARY / "docker-restart.yaml")
    argv = [sys.executable, "-m", "mailstorm.cli", "run", scenario, "--out", str(out), "--quiet"]
    pipes = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    with subprocess.Popen(argv, cwd=ROOT, **pipes) as run:
        try:
            deadline = time.monotonic() + 120
            while not list(out.glob("*/ledger/load-*.jsonl")):
                assert run.poll() is None, run.stderr.read()
                assert time.monotonic() < deadline, "the run did not get to its load phase"
                time.sleep(0.2)
            [run_dir] = list(out.glob("*"))
            assert CLIENT.containers.list(filters={"label": f"{LABEL}={run_dir.resolve()}"})
            run.send_signal(signal.SIGINT)
            assert run.wait(60) == 130
        finally:
            run.kill()
    assert CLIENT.containers.list(all=True, filters={"label": f"{LABEL}={run_dir.resolve()}"}) == []


def test_a_sigkilled_runner_leaves_no_container_within_10_s(tmp_path):
    """SIGKILL to mailstorm run mid-load: a container is no process of the runner, so the watchdog removes
    it: within 10 s no container with the run's label and no process of the run is left."""
    subprocess.run([sys.executable, str(ROOT / "docker" / "build_pyhost_image.py")], check=True, timeout=300)
    out, err = tmp_path / "runs", tmp_path / "stderr.txt"
    run = start_run(LIBRARY / "docker-restart.yaml", out, err)
    try:
        run_dir = wait_for_load(run, out, err, timeout=120)
        label = {"label": f"{LABEL}={run_dir.resolve()}"}
        assert CLIENT.containers.list(filters=label)
        run.kill()
        run.wait()
        deadline = time.monotonic() + 10
        while (CLIENT.containers.list(all=True, filters=label) or processes_of(out)) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)  # polling dockerd and the process table
        assert CLIENT.containers.list(all=True, filters=label) == [] and processes_of(out) == []
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for c in CLIENT.containers.list(all=True, filters={"label": LABEL}):
            if c.labels[LABEL].startswith(str(out.resolve())):  # this test's only: never another's
                c.remove(force=True)
    assert "removed container" in (run_dir / "logs" / "watchdog.log").read_text()
    assert cleanup(out).stdout == "nothing to clean up\n"
