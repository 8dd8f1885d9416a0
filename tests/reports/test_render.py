"""The report files: JSON valid against its schema, JUnit one case per SLO, Markdown and HTML readable,
and the HTML page rendered by a real headless Chromium with its plots present and not blank."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
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

SCHEMA = Path(mailstorm.reports.__file__).parent / "schema" / "report.schema.json"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


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
    assert "http://" not in page.replace("http://127.0.0.1/health", "") and "<script" not in page


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
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
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
        .replace(
            "</body>",
            "<script>document.body.setAttribute('data-widths', Array.from(document.images)"
            ".map(i => i.complete ? i.naturalWidth : -1).join(','));</script></body>",
        )
    )
    dom = _chromium("--dump-dom", probe.as_uri(), tmp=tmp_path).stdout
    widths = [int(w) for w in re.search(r'data-widths="([^"]*)"', dom).group(1).split(",")]
    assert len(widths) == 3 and all(w > 500 for w in widths)
