"""The report page's interactive charts (reports/charts.py): what the page embeds, how big a 1-hour run's
page is, how a long run is reduced, and that the user's text cannot end the data's script element."""

from __future__ import annotations

import asyncio
import json
import re

import numpy as np
import pytest

import mailstorm.reports
from mailstorm.ledger import LedgerWriter, RunStarted
from mailstorm.reports import charts
from mailstorm.reports.analysis import analyze
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.synthetic import synthesize
from tests.browser import Browser, needs_chromium

PAGE_BUDGET = 2 * 1024 * 1024


def _page_charts(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page)
    assert found is not None
    return json.loads(found.group(1))


def test_a_one_hour_run_page_is_under_two_megabytes(tmp_path):
    """A 3,600-second run with an outage: report.html (charts' data, uPlot, the PNG fallbacks) < 2 MB,
    one timeline point per second, and the page carries uPlot and its MIT notice."""
    synthesize(tmp_path, rates=np.full(3600, 20.0), outage=(600.0, 660.0), slo=SloSpec(), bulk=True)
    mailstorm.reports.build(tmp_path)
    page = (tmp_path / "report.html").read_text()
    size = len(page.encode())
    assert size < PAGE_BUDGET, f"report.html is {size:,} bytes"
    data = _page_charts(page)
    throughput = data["timeline"][0]
    assert len(throughput["data"][0]) >= 3600 and throughput["note"] == ""
    assert throughput["bands"][0]["start"] == 600.0
    assert f"uPlot v{charts.UPLOT_VERSION}" in page and "Permission is hereby granted" in page
    assert (tmp_path / "plots" / "timeline.png").exists()  # the PNGs stay beside the page


def test_a_long_run_is_reduced_to_buckets(tmp_path):
    """Past MAX_POINTS seconds the timeline is bucketed: rates averaged (the total is kept), backlog and
    latency the bucket's maximum, and the page says so."""
    rates = np.full(9000, 2.0)
    rates[4000:4010] = 50.0  # a burst the relay cannot take at once: backlog rises for a few seconds
    synthesize(tmp_path, rates=rates, capacity=10.0, slo=SloSpec(), bulk=True)
    a = analyze(tmp_path)
    throughput, backlog, latency = charts.timeline(a)
    k = 3  # ceil(9,000-odd seconds / 4,000)
    assert len(throughput["data"][0]) <= charts.MAX_POINTS
    assert throughput["data"][0][:3] == [0, k, 2 * k]
    assert f"each point: {k} s" in throughput["note"]
    offered = np.array(throughput["data"][1], dtype=float)
    assert offered.sum() * k == a.series.offered.sum()  # every bucket is full: means add up to the total
    assert max(backlog["data"][1]) == a.series.backlog.max()
    assert max(v for v in latency["data"][3] if v is not None) == round(float(np.nanmax(a.series.p99_ms)), 1)


def test_buckets_mean_and_max_skip_empty_seconds():
    nan = np.nan
    a = np.array([1.0, 3.0, nan, nan, 5.0])
    assert charts._buckets(a, 2, "mean").tolist()[:1] == [2.0]
    assert np.isnan(charts._buckets(a, 2, "mean")[1])
    assert charts._buckets(a, 2, "max").tolist()[2] == 5.0 and np.isnan(charts._buckets(a, 2, "max")[1])
    assert charts._buckets(a, 1, "max") is a


def test_script_json_cannot_close_the_script_element():
    """A fault named by the user as markup stays data: no '<', '>' or '&' reach the page raw."""
    name = "</script><script>alert(1)</script><!--"
    text = charts.script_json({"bands": [{"label": name}]})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text)["bands"][0]["label"] == name


def test_joined_series_keep_their_own_points():
    x1, y1 = np.array([1.0, 2.0]), np.array([10.0, 20.0])
    x2, y2 = np.array([1.5, 2.0]), np.array([7.0, 8.0])
    assert charts._join([(x1, y1), (x2, y2)], 3) == [[1, 1.5, 2], [10.0, None, 20.0], [None, 7.0, 8.0]]


@pytest.mark.browser
@needs_chromium
def test_a_run_with_nothing_to_draw_loads_without_a_script_error(tmp_path):
    """A run that sent nothing: its page still draws its three timeline panels, with no script error."""
    with LedgerWriter(tmp_path / "ledger", "timeline") as tl:
        tl.write(RunStarted(run_id="r", name="empty", seed=0, duration_s=1))
    mailstorm.reports.build(tmp_path)

    async def session() -> None:
        async with Browser(tmp_path, 1000, 700) as b:
            await b.goto((tmp_path / "report.html").as_uri())
            assert await b.eval("Object.keys(window.mailstormCharts)") == ["throughput", "backlog", "latency"]
            assert b.console_errors == []

    asyncio.run(session())
