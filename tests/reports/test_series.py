"""Per-second series agree with a direct count over the messages."""

from __future__ import annotations

import numpy as np

from mailstorm.reports.fate import LOST, NEVER, PENDING
from mailstorm.reports.series import build_series, start_ns
from mailstorm.reports.store import open_run
from tests.reports.oracle import classify, read_columns

NS = 1_000_000_000


def test_series_match_a_direct_count(outage_run):
    """Offered, delivered, per-second p95 and the final backlog match counting message by message."""
    run_dir, truth = outage_run
    msgs = classify(read_columns(run_dir / "ledger"))  # the numpy oracle: message by message
    with open_run(run_dir / "ledger") as store:
        t0 = start_ns(store)
        s = build_series(store, t0)
    assert s.offered.sum() == truth.submitted
    assert s.delivered.sum() == truth.delivered + truth.duplicated
    assert s.esp_accepted.sum() == truth.delivered + 2 * truth.duplicated
    assert s.esp_replies["451"].sum() > 0 and s.esp_replies["550"].sum() == truth.bounced
    # Nothing delivered during the outage, everything held is in the backlog at its end.
    assert s.delivered[21:30].sum() == 0 and s.backlog[29] >= 900
    # Lost and pending messages never leave the SUT: they are the backlog left at the end.
    assert s.backlog[-1] == int(np.isin(msgs.outcome, (LOST, PENDING)).sum())
    got = msgs.first_esp != NEVER
    sec = (msgs.first_esp[got] - t0) // NS
    lat = (msgs.first_esp[got] - msgs.intended[got]) / 1e6
    for i in (5, 31, 33, 45):
        expect = np.percentile(lat[sec == i], 95, method="inverted_cdf")
        assert s.p95_ms[i] == expect
