"""The docker target end to end through ``mailstorm run`` (long): the library's docker-restart scenario,
the reference pipeline in a container paused and restarted by the timeline, loses nothing and leaves no
container behind, also when the run is interrupted with Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from mailstorm.errors import UserError
from mailstorm.harness.targets.docker import LABEL, docker_client
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import LIBRARY, ROOT, lost_and_counts, run_cli


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
