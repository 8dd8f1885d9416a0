"""Renderers: the analysis as report.html (self-contained), report.md, report.json and junit.xml.

HTML and Markdown come from jinja2 templates in ``reports/templates``; the HTML draws its charts in the
browser (reports/charts.py: the data, uPlot and the script all inline, the PNGs as a no-script fallback)
so the one file can be mailed, attached to a CI run or opened offline. JSON is ``Analysis.figures``
as is (its shape is documented by ``reports/schema/report.schema.json``). JUnit has one test case per
judged SLO, failures carrying the figures.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mailstorm.reports import charts, plots
from mailstorm.reports.analysis import Analysis
from mailstorm.reports.fate import OUTCOMES
from mailstorm.reports.sizing_compare import duration

TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=lambda name: bool(name and name.endswith(".html.j2")),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 100):
        return f"{int(x):,}"
    return f"{x:,.2f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:,.1f}"


def ms(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x / 1000:,.2f} s"
    return f"{x:,.1f} ms" if x >= 10 else f"{x:.2f} ms"


def secs(x: float | None) -> str:
    return "—" if x is None else f"{x:,.1f} s"


def pct(part: int, whole: int) -> str:
    if not whole:
        return "—"
    share = 100.0 * part / whole
    return f"{share:.2f}%" if share >= 0.01 or part == 0 else "<0.01%"


def effect_text(fault: dict[str, Any]) -> str:
    """A fault window's effect in a few words: "no effect", or what the ledgers show of it."""
    if fault.get("no_effect"):
        return "no effect"
    e = fault.get("effect") or {}
    parts = [
        f"{e['acted']:,} acted" if e.get("acted") else "",
        f"{e['failed']:,} failed" if e.get("failed") else "",
        f"{e['moved']:,} moved to another ESP" if e.get("moved") else "",
    ]
    parts.append("impact" if e.get("impacted") else "")
    return ", ".join(p for p in parts if p) or "—"


_env.globals.update(
    num=num, ms=ms, secs=secs, pct=pct, duration=duration, effect_text=effect_text, outcome_names=OUTCOMES
)


def headline(a: Analysis) -> str:
    """The verdict in a sentence, then the load that was planned against the load that was offered."""
    f = a.figures
    o = f["outcomes"]
    failed = [r.detail for r in a.slo_results if not r.passed]
    if failed:
        verdict = f"{len(failed)} of {len(a.slo_results)} objective(s) breached: " + "; ".join(failed) + "."
    else:
        p95 = f["latency_ms"]["e2e"]["p95"]
        verdict = (
            f"All {len(a.slo_results)} objective(s) held: {o['delivered'] + o['duplicated']:,} of "
            f"{o['submitted']:,} messages delivered, {o['lost']} lost, end-to-end p95 {ms(p95)}."
        )
    return f"{verdict} {a.load.summary}"


def _context(a: Analysis) -> dict[str, Any]:
    f = a.figures
    recs = [r.time_to_recover_s for r in a.recoveries]
    slowest = "never" if any(r is None for r in recs) else secs(max(recs)) if recs else "—"
    return {"partial": None, **f, "headline": headline(a), "slowest_recovery": slowest}


def html(a: Analysis) -> tuple[str, dict[str, bytes]]:
    """The page, and the PNGs it inlines (by name) so they can be written beside it too."""
    pngs = {
        name: png
        for name, png in (
            ("timeline", plots.timeline(a)),
            ("cdf", plots.latency_cdf(a)),
            ("capacity", plots.capacity_curve(a)),
            ("campaign", plots.campaign(a)),
        )
        if png is not None
    }
    images = {name: base64.b64encode(png).decode() for name, png in pngs.items()}
    for missing in ("cdf", "capacity", "campaign"):
        images.setdefault(missing, "")
    specs = charts.specs(a)
    page = _env.get_template("report.html.j2").render(
        **_context(a), images=images, charts=specs, chart_json=charts.script_json(specs), **charts.assets()
    )
    return page, pngs


def markdown(a: Analysis) -> str:
    return _env.get_template("report.md.j2").render(**_context(a))


def json_bytes(a: Analysis) -> bytes:
    return orjson.dumps(a.figures, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def junit(a: Analysis) -> bytes:
    failures = sum(not r.passed for r in a.slo_results)
    run = a.figures["run"]
    suites = ET.Element("testsuites", name="mailstorm", tests=str(len(a.slo_results)), failures=str(failures))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"mailstorm.slo.{run.get('name') or 'run'}",
        tests=str(len(a.slo_results)),
        failures=str(failures),
        errors="0",
        skipped="0",
        timestamp=run["generated_at"],
    )
    props = ET.SubElement(suite, "properties")
    for key in ("run_id", "name", "seed", "dir"):
        ET.SubElement(props, "property", name=key, value=str(run.get(key)))
    o = a.figures["outcomes"]
    figures = ", ".join(f"{k}={v}" for k, v in o.items())
    for r in a.slo_results:
        case = ET.SubElement(suite, "testcase", classname="mailstorm.slo", name=r.name, time="0")
        if not r.passed:
            fail = ET.SubElement(case, "failure", message=r.detail, type="SLOBreached")
            fail.text = f"{r.detail}\ntarget={r.target} actual={r.actual} unit={r.unit}\n{figures}\n"
        else:
            ET.SubElement(case, "system-out").text = r.detail
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
