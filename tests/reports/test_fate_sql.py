"""The fate rules' SQL form (``fate.MESSAGES_SQL``, run by the out-of-core engine) gives every message the
outcome the numpy form (``fate.classify``) gives it. Every ledger a test here writes into its tmp_path is
held to this too (tests/reports/conftest.py); these add the module-wide runs and generated ledgers."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.reports.synthetic import synthesize
from tests.reports.fate_forms import numpy_fates, sql_fates
from tests.reports.test_fate import SYNTHETIC, _write_fates
from tests.strategies import message_fates


def test_the_outage_run_gets_the_same_outcomes_in_both_forms(outage_run):
    """The shared known-answer run (an outage, every bad outcome): one outcome per message, both forms."""
    run_dir, truth = outage_run
    fates = sql_fates(run_dir / "ledger")
    assert fates == numpy_fates(run_dir / "ledger")
    assert sum(f == "lost" for f in fates.values()) == truth.lost


@pytest.mark.parametrize("name", SYNTHETIC)
def test_the_synthetic_runs_get_the_same_outcomes_in_both_forms(tmp_path, name):
    """Each synthetic known-answer run (bulk-written too): both forms, message by message."""
    synthesize(tmp_path, seed=11, **SYNTHETIC[name])
    assert sql_fates(tmp_path / "ledger") == numpy_fates(tmp_path / "ledger")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message_fates, min_size=0, max_size=25), st.sampled_from([None, True, False]))
def test_generated_ledgers_get_the_same_outcomes_in_both_forms(fates, listing):
    """Whatever mix of records a message has (retries, 4xx/5xx, acked or not, deferrals, relays, holds, a
    stop; a complete queue listing, an incomplete one, none), the SQL form decides what the numpy form
    decides, message by message."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger"
        ledger.mkdir()
        _write_fates(ledger, fates, listing)
        assert sql_fates(ledger) == numpy_fates(ledger)
