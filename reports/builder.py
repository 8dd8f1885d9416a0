"""``build(run_dir)``: every report of a run, from its ledgers alone, written into the run directory.

This is what the runner calls at the end of a run and what ``mailstorm report RUN_DIR`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstorm.reports import render
from mailstorm.reports.analysis import Analysis, analyze
from mailstorm.reports.slo import SloResult
from mailstorm.reports.spec import ReportSpec, SloSpec

FILES = {"html": "report.html", "md": "report.md", "json": "report.json", "junit": "junit.xml"}
PARTIAL_FORMATS = ("html", "json")  # what a run still going rebuilds (a CI reads junit.xml at the end)


@dataclass
class Verdict:
    """The outcome of ``build``: did the SLOs hold, the figures behind it, and the files written."""

    passed: bool
    verdict: str  # "pass" | "fail"
    outcomes: dict[str, int]
    slo: list[SloResult]
    figures: dict[str, Any]  # everything in report.json
    headline: str = ""  # the verdict and the load in a few sentences (the reports' first line)
    files: dict[str, Path] = field(default_factory=dict)
    analysis: Analysis | None = field(default=None, repr=False)


def build(
    run_dir: Path | str,
    *,
    report: ReportSpec | None = None,
    slo: SloSpec | None = None,
    partial: tuple[float, float] | None = None,
) -> Verdict:
    """Analyse ``run_dir`` (slo.json, run.json, its ledger segments) and write the reports into it.

    ``report`` and ``slo`` override what the run directory says (run.json's ``report``, slo.json).
    ``partial`` (seconds into the run, of how many): a report of a run still going, from the ledgers so
    far: only report.html and report.json, each saying "partial, at N s of M s" (``partial`` in the JSON).
    Raises ``UserError`` for a directory that is not a run, ``ConfigError`` for a bad slo.json.
    """
    run_dir = Path(run_dir)
    a = analyze(run_dir, report=report, slo=slo)
    formats = a.report.formats
    if partial is not None:
        at, of = partial
        a.figures["partial"] = {
            "at_s": round(at, 1),
            "of_s": of,
            "text": f"partial, at {at:.0f} s of {of:g} s",
        }
        formats = tuple(f for f in formats if f in PARTIAL_FORMATS)
    files: dict[str, Path] = {}
    for fmt in formats:
        path = run_dir / FILES[fmt]
        if fmt == "html":
            page, pngs = render.html(a)
            _write(path, page.encode())
            plots_dir = run_dir / "plots"
            plots_dir.mkdir(exist_ok=True)
            for name, png in pngs.items():
                _write(plots_dir / f"{name}.png", png)
        elif fmt == "md":
            _write(path, render.markdown(a).encode())
        elif fmt == "json":
            _write(path, render.json_bytes(a))
        else:
            _write(path, render.junit(a))
        files[fmt] = path
    return Verdict(
        passed=a.passed,
        verdict=a.figures["verdict"],
        outcomes=a.figures["outcomes"],
        slo=a.slo_results,
        figures=a.figures,
        headline=render.headline(a),
        files=files,
        analysis=a,
    )


def _write(path: Path, data: bytes) -> None:
    # Write then rename, so a reader (or a Ctrl-C) never sees half a report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
