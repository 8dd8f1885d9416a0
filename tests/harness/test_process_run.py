"""The process target end to end through ``mailstorm run``: the reference pipeline as a plain command,
killed with -9 and restarted by the timeline, or stalled with SIGSTOP; complete ledgers, right counts."""

from __future__ import annotations

import pytest

from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import LIBRARY, chaos_window, lost_and_counts, run_cli

CRASH = (LIBRARY / "sut-crash.yaml").read_text()


def actions(run_dir) -> list[tuple[str, bool]]:
    return [(r["what"], r["ok"]) for r in LedgerReader(run_dir / "ledger").records([Kind.ACTION])]


def submissions(run_dir) -> list[dict]:
    return list(LedgerReader(run_dir / "ledger").records([Kind.LOAD_SUBMIT]))


def test_kill_9_and_restart_through_the_timeline(tmp_path):
    """A 12 s run killing the process at 4 s and restarting it at 6 s: both actions succeed, submissions
    in the gap are refused (counted, not lost), every accepted message reaches the ESP: exit 0."""
    path = tmp_path / "crash.yaml"
    path.write_text(
        CRASH.replace("duration: 30s", "duration: 12s")
        .replace("at: 10s", "at: 4s")
        .replace("drain_deadline: 60s", "drain_deadline: 30s")
    )
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    assert actions(run_dir) == [("kill", True), ("restart", True)]
    subs = submissions(run_dir)
    assert len(subs) == 12 * 30
    begin, end = chaos_window(run_dir, "crash")
    refused = [s for s in subs if not s["ok"]]
    assert refused, "no submission saw the crash"
    assert all(s["end"] >= begin and s["start"] <= end + 2_000_000_000 for s in refused), refused[:3]
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and accepted + len(refused) == len(subs)


@pytest.mark.long
def test_library_sut_crash(tmp_path):
    """The library's sut-crash scenario passes unedited: kill and restart happen, nothing accepted is lost."""
    code, run_dir, err = run_cli(LIBRARY / "sut-crash.yaml", tmp_path / "runs")
    assert code == 0, err
    assert actions(run_dir) == [("kill", True), ("restart", True)]
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and 0 < accepted < len(submissions(run_dir))


@pytest.mark.long
def test_library_sut_stall(tmp_path):
    """The library's sut-stall scenario (SIGSTOP for 10 s) passes: no submission refused, nothing lost,
    and nothing reached the ESP in the middle of the stall."""
    code, run_dir, err = run_cli(LIBRARY / "sut-stall.yaml", tmp_path / "runs")
    assert code == 0, err
    assert actions(run_dir) == [("pause", True), ("resume", True)]
    assert all(s["ok"] for s in submissions(run_dir))
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and accepted > 0
    begin, end = chaos_window(run_dir, "stall")
    mid = [
        r
        for r in LedgerReader(run_dir / "ledger").records([Kind.ESP_ACCEPTED])
        if begin + 1e9 < r["t"] < end - 1e9
    ]
    assert mid == []
