"""The docker target end to end through ``mailstorm run`` (long): the library's docker-restart scenario,
the reference pipeline in a container paused and restarted by the timeline, loses nothing and leaves no
container behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.errors import UserError
from harness.ledger import Kind, LedgerReader
from harness.targets.docker import LABEL, docker_client
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
