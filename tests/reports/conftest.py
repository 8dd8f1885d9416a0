"""Fixtures for the reports tests: synthetic run directories with a known truth."""

from __future__ import annotations

import pytest

from mailstorm.errors import UserError
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.synthetic import synthesize
from tests.reports.fate_forms import ledger_dirs, numpy_fates, sql_fates


@pytest.fixture(autouse=True)
def fate_forms_agree(request):
    """After every test here that made ledgers in its tmp_path: the fate rules' numpy and SQL forms give
    every message of every such ledger the same outcome (so each known-answer ledger of the suite holds
    the out-of-core path to the numpy one)."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    tmp_path = request.getfixturevalue("tmp_path")
    yield
    for ledger in ledger_dirs(tmp_path):
        try:
            expected = numpy_fates(ledger)
        except UserError:
            continue  # a ledger damaged on purpose: the numpy form refuses it (a one-line error)
        assert sql_fates(ledger) == expected, f"the fate rules' two forms disagree on {ledger}"


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
