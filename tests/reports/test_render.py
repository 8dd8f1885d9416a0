"""The report files: JSON valid against its schema, JUnit one case per SLO, Markdown and HTML readable,
and the HTML page rendered by a real headless Chromium with its plots present and not blank, its charts
interactive (hover, zoom, toggle) and nothing fetched from outside the page."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from junitparser import Failure, JUnitXml
from matplotlib import image as mpimg

import mailstorm.reports
from mailstorm.reports.spec import ReportSpec, SloSpec
from mailstorm.reports.synthetic import synthesize
from tests.browser import CHROMIUM, Browser, needs_chromium

SCHEMA = Path(mailstorm.reports.__file__).parent / "schema" / "report.schema.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A step run with an outage, every SLO set, and a sizing target compared against every ESP profile
    (``reports.sizing.compare: true``): every section of every report."""
    run_dir = tmp_path_factory.mktemp("built")
    rates = np.repeat([100.0, 200.0, 300.0, 400.0, 500.0, 600.0], 10)
    synthesize(
        run_dir,
        rates=rates,
        capacity=450.0,
        outage=(12.0, 16.0),
        lost=2,
        duplicated=1,
        bounced=1,
        rejected=1,
        shape={"kind": "step", "start_rate": 100, "step_rate": 100, "step_s": 10, "steps": 6},
        slo=SloSpec(
            max_duplicated=5,
            max_bounced=0,
            max_pending=0,
            p95_e2e_ms=500,
            p99_e2e_ms=10_000,
            max_recovery_s=20,
            min_throughput=10,
        ),
    )
    # As a scenario's ``reports:`` section says it, parsed by the same model.
    spec = ReportSpec.model_validate({"sizing": {"target": "1000000/1h", "headroom": "30%", "compare": True}})
    verdict = mailstorm.reports.build(run_dir, report=spec)
    return run_dir, verdict


def test_build_result(built):
    """build() returns the verdict with passed, the outcomes and every file it wrote."""
    run_dir, v = built
    assert v.passed is False and v.verdict == "fail"
    assert v.outcomes["lost"] == 2
    assert set(v.files) == {"html", "md", "json", "junit"}
    assert all(p.exists() and p.parent == run_dir for p in v.files.values())
    assert not list(run_dir.glob("*.tmp"))


def test_report_json_validates_against_schema(built):
    """report.json validates against the documented JSON Schema, and the schema rejects a broken one."""
    run_dir, _ = built
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    doc = json.loads((run_dir / "report.json").read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    assert doc["capacity"] is not None and doc["sizing"] is not None and doc["faults"]
    doc["outcomes"]["lost"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def test_sizing_compare_table_in_html_and_markdown(built):
    """With reports.sizing.compare the HTML page and report.md carry the ESP-selection table: a row per
    profile, the time the target takes on each (SES's sandbox: 200 a day, so 4,999 days and 200 s)."""
    from mailstorm.fake_esp.profiles import PROFILE_NAMES

    run_dir, _ = built
    doc = json.loads((run_dir / "report.json").read_text())
    assert [r["profile"] for r in doc["sizing"]["compare"]] != [] and len(doc["sizing"]["compare"]) == len(
        PROFILE_NAMES
    )
    html = (run_dir / "report.html").read_text()
    assert 'id="sizing-compare"' in html and all(f'">{name}</td>' in html for name in PROFILE_NAMES)
    assert "4,999.0 d" in html  # ses: 1,000,000 at 200 a day: 4,999 full days, then 200 at 1/s
    md = (run_dir / "report.md").read_text()
    assert "| profile | rate msg/s | rate carries |" in md and "| ses | 1 | no | 200 | no | 4,999.0 d |" in md


def test_junit_has_one_case_per_slo(built):
    """junit.xml parses with junitparser: one test case per judged SLO, failures carrying the figures."""
    run_dir, v = built
    xml = JUnitXml.fromfile(str(run_dir / "junit.xml"))
    cases = [case for suite in xml for case in suite]
    assert [c.name for c in cases] == [s.name for s in v.slo]
    assert len(cases) == 9  # max_lost and max_dropped (always judged) + the seven optional SLOs set above
    failed = {c.name for c in cases if any(isinstance(r, Failure) for r in c.result)}
    assert failed == {s.name for s in v.slo if not s.passed}
    assert "max_lost" in failed
    lost_case = next(c for c in cases if c.name == "max_lost")
    assert "actual=2" in lost_case.result[0].text


def test_markdown_summary(built):
    """report.md leads with the verdict and carries the outcome and SLO tables."""
    run_dir, _ = built
    md = (run_dir / "report.md").read_text()
    assert md.startswith("## mailstorm: ❌ FAIL")
    assert "| `max_lost` | 0 messages | 2 | **FAIL** |" in md
    assert "Capacity: max sustainable" in md and "Sizing for 1000000/1h" in md


def _pixels(png: bytes) -> np.ndarray:
    return mpimg.imread(io.BytesIO(png), format="png")


def test_inline_plots_are_not_blank(built):
    """Every plot inlined in report.html is a real PNG with varied pixels (not an empty canvas)."""
    run_dir, _ = built
    page = (run_dir / "report.html").read_text()
    pngs = [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]
    assert len(pngs) == 3  # timeline, latency CDF, capacity
    for png in pngs:
        px = _pixels(png)
        assert px.shape[0] > 200 and px.shape[1] > 500
        assert float(px[..., :3].std()) > 0.05
    # Nothing outside the page: no script, style or image from elsewhere (the browser test below also
    # watches the requests the page makes).
    assert not re.search(r"""<(script|link|img|iframe)[^>]+(src|href)=["']?(https?:)?//""", page)


def _chromium(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp / 'profile'}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.browser
@needs_chromium
def test_html_in_headless_chromium(built, tmp_path):
    """Chromium renders report.html: a screenshot with content, every plot image decoded by the browser."""
    run_dir, _ = built
    shot = tmp_path / "report.png"
    done = _chromium("--hide-scrollbars", "--window-size=1200,2400", f"--screenshot={shot}",
                     (run_dir / "report.html").as_uri(), tmp=tmp_path)  # fmt: skip
    assert shot.exists(), done.stderr[-2000:]
    px = _pixels(shot.read_bytes())
    assert px.shape[:2] == (2400, 1200)
    assert float(px[..., :3].std()) > 0.05
    # The verdict banner is first: the top of the page is the FAIL red, not the page background.
    top = px[40:80, 100:1100, :3].reshape(-1, 3).mean(axis=0)
    assert top[0] > 0.55 and top[1] < 0.35
    # Ask the browser itself whether each image decoded: a probe page reports naturalWidth per image.
    probe = tmp_path / "probe.html"
    probe.write_text(
        (run_dir / "report.html")
        .read_text()
        .replace("<noscript>", "")  # the PNGs are the page's no-script fallback: make them live here
        .replace("</noscript>", "")
        .replace(
            "</body>",
            "<script>document.body.setAttribute('data-widths', Array.from(document.images)"
            ".map(i => i.complete ? i.naturalWidth : -1).join(','));</script></body>",
        )
    )
    dom = _chromium("--dump-dom", probe.as_uri(), tmp=tmp_path).stdout
    widths = [int(w) for w in re.search(r'data-widths="([^"]*)"', dom).group(1).split(",")]
    assert len(widths) == 3 and all(w > 500 for w in widths)


def _legend(chart: str) -> str:
    """JS: the legend values of chart ``chart`` (x first), as the page shows them."""
    return (
        f"Array.from(document.querySelectorAll('#chart-{chart} .u-legend .u-value')).map(e => e.textContent)"
    )


def _number(text: str) -> float:
    return float(text.split()[0].replace(",", ""))


@pytest.mark.browser
@needs_chromium
def test_interactive_charts_in_headless_chromium(built, tmp_path):
    """The page loads with no request outside itself and no script error, every chart draws, a hover
    shows the values at that second (those of report.json) in all three timeline panels, a drag zooms
    the three together, a click on a legend entry hides its series. Screenshots in tmp_path."""
    run_dir, _ = built
    page = run_dir / "report.html"
    series = json.loads((run_dir / "report.json").read_text())["series"]

    async def session() -> None:
        async with Browser(tmp_path, 1200, 900) as b:
            await b.goto(page.as_uri())
            assert page.as_uri() in b.requests  # the page itself: the browser's requests are watched
            assert all(u == page.as_uri() or u.startswith("data:") for u in b.requests), b.requests
            assert b.console_errors == []
            ids = ["throughput", "backlog", "latency", "cdf", "capacity-steps", "capacity-usl"]
            assert await b.eval("Object.keys(window.mailstormCharts)") == ids
            # Every chart drew: its canvas has thousands of non-white pixels.
            inked = await b.eval(
                "Object.fromEntries(Object.entries(mailstormCharts).map(([id, u]) => { const c = u.ctx;"
                " const d = c.getImageData(0, 0, c.canvas.width, c.canvas.height).data; let n = 0;"
                " for (let i = 0; i < d.length; i += 4) if (d[i+3] && (d[i] < 200 || d[i+1] < 200)) n++;"
                " return [id, n]; }))"
            )
            assert all(n > 2000 for n in inked.values()), inked

            # Hover at second 30 of the throughput panel.
            await b.eval("document.getElementById('chart-throughput').scrollIntoView()")
            box = await b.eval(
                "(() => { const u = mailstormCharts.throughput, r = u.over.getBoundingClientRect();"
                " return [r.left + u.valToPos(30, 'x'), r.top + r.height / 2, r.left, r.width]; })()"
            )
            await b.mouse_move(box[0], box[1])
            hovered = f"(v => v[0] !== '—' && v)({_legend('throughput')})"
            shown = await b.wait_for(hovered, what="the legend's values at the cursor")
            await b.screenshot(tmp_path / "hover.png")
            second = int(_number(shown[0]))
            assert abs(second - 30) <= 1
            offered, accepted, delivered = (_number(v) for v in shown[1:4])
            assert (offered, accepted, delivered) == (
                series["offered"][second],
                series["sut_accepted"][second],
                series["delivered"][second],
            )
            assert delivered > 0
            # The other panels follow the cursor: the same second, report.json's backlog and p95.
            backlog = await b.eval(_legend("backlog"))
            assert int(_number(backlog[0])) == second and _number(backlog[1]) == series["backlog"][second]
            latency = await b.eval(_legend("latency"))
            assert _number(latency[2]) == pytest.approx(series["p95_ms"][second], abs=0.06)

            # Drag from second 20 to 40: all three panels zoom to it.
            u = "mailstormCharts.throughput"
            x20, x40 = await b.eval(f"[{u}.valToPos(20, 'x'), {u}.valToPos(40, 'x')]")
            await b.drag(box[2] + x20, box[2] + x40, box[1])
            scales = await b.eval(
                "['throughput', 'backlog', 'latency'].map(id => "
                "[mailstormCharts[id].scales.x.min, mailstormCharts[id].scales.x.max])"
            )
            for lo, hi in scales:
                assert lo == pytest.approx(20, abs=0.5) and hi == pytest.approx(40, abs=0.5), scales
            await b.screenshot(tmp_path / "zoomed.png")

            # A click on the legend's "offered" entry hides that series.
            entry = await b.eval(
                "(() => { const r = document.querySelectorAll('#chart-throughput .u-legend .u-series')[1]"
                ".getBoundingClientRect(); return [r.left + 20, r.top + r.height / 2]; })()"
            )
            await b.click(*entry)
            assert await b.eval(f"{u}.series[1].show") is False
            assert await b.eval(f"{u}.series[3].show") is True
            await b.screenshot(tmp_path / "toggled.png", full_page=True)
            assert b.console_errors == []

    asyncio.run(session())
