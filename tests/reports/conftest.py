"""Fixtures for the reports tests: synthetic run directories with a known truth."""

from __future__ import annotations

import pytest

from mailstorm.reports.spec import SloSpec
from mailstorm.reports.synthetic import synthesize


@pytest.fixture(scope="module")
def outage_run(tmp_path_factory):
    """A 60 s run at 100 msg/s with a 10 s ESP outage, and exact numbers of each bad outcome."""
    run_dir = tmp_path_factory.mktemp("outage")
    truth = synthesize(
        run_dir,
        rates=[100.0] * 60,
        capacity=300.0,
        outage=(20.0, 30.0),
        rejected=5,
        lost=3,
        duplicated=2,
        bounced=4,
        pending=1,
        seed=7,
        slo=SloSpec(max_recovery_s=10, p95_e2e_ms=100, max_duplicated=5),
    )
    return run_dir, truth
