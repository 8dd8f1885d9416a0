"""The chaos proxy end to end through ``mailstorm run``: a network latency step slows delivery through the
reference pipeline by at least the latency per ESP round trip, only during its window; nothing lost."""

from __future__ import annotations

import statistics

import pytest

from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import LIBRARY, chaos_window, lost_and_counts, run_cli

LATENCY = """\
name: proxy-latency-short
seed: 9
duration: 14s
drain_deadline: 30s
target: {kind: reference}
load:
  shape: {kind: steady, rate: 20}
chaos:
  - {at: 5s, for: 5s, name: slow, network: {type: latency, ms: 150}}
slo:
  max_lost: 0
"""


def e2e_by_window(run_dir, begin: int, end: int) -> tuple[list[float], list[float]]:
    """End-to-end latency (s) of messages submitted well before the window, and inside it."""
    reader = LedgerReader(run_dir / "ledger")
    first_esp: dict[str, int] = {}
    for r in reader.records([Kind.ESP_ACCEPTED]):
        first_esp[r["id"]] = min(r["t"], first_esp.get(r["id"], r["t"]))
    before, inside = [], []
    for s in reader.records([Kind.LOAD_SUBMIT]):
        if s["ok"] and s["id"] in first_esp:
            e2e = (first_esp[s["id"]] - s["intended"]) / 1e9
            if s["intended"] < begin - 1e9:
                before.append(e2e)
            elif begin + 1e9 < s["intended"] < end - 1e9:
                inside.append(e2e)
    return before, inside


def test_network_latency_step_slows_delivery_in_its_window(tmp_path):
    """A 150 ms latency toxic on the ESP's replies adds at least 150 ms to the median end-to-end delivery
    inside the window (a relay session has several round trips); nothing lost; exit 0."""
    path = tmp_path / "latency.yaml"
    path.write_text(LATENCY)
    code, run_dir, err = run_cli(path, tmp_path / "runs")
    assert code == 0, err
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and accepted == 14 * 20
    before, inside = e2e_by_window(run_dir, *chaos_window(run_dir, "slow"))
    assert statistics.median(inside) - statistics.median(before) >= 0.15


@pytest.mark.long
def test_library_network_latency(tmp_path):
    """The library's network-latency scenario (latency, then resets) passes unedited and loses nothing."""
    code, run_dir, err = run_cli(LIBRARY / "network-latency.yaml", tmp_path / "runs")
    assert code == 0, err
    lost, accepted, _ = lost_and_counts(run_dir)
    assert lost == set() and accepted > 0
