"""``mailstorm report``, ``mailstorm compare`` and ``mailstorm sizing``: the reports from the command line.

``report RUN_DIR`` rebuilds every report from the run's ledgers and exits 0 when the SLOs held, 1 when
one was breached (as ``mailstorm run`` does). ``compare RUN_A RUN_B`` prints the change in the headline
figures (from each run's report.json when present, else from its ledgers). ``sizing RUN_DIR --target
1000000/1h --headroom 30%`` prints the instances and ESP rate a target needs, with the arithmetic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from mailstorm.errors import EXIT_OK, EXIT_SLO_BREACHED, UserError
from mailstorm.reports.sizing_compare import duration
from mailstorm.reports.spec import ReportSpec, SizingSpec

_FORMATS = ("html", "md", "json", "junit")
# (label, path in report.json, unit, True when higher is better)
HEADLINE: tuple[tuple[str, tuple[str, ...], str, bool], ...] = (
    ("submitted", ("outcomes", "submitted"), "", True),
    ("delivered", ("outcomes", "delivered"), "", True),
    ("duplicated", ("outcomes", "duplicated"), "", False),
    ("bounced", ("outcomes", "bounced"), "", False),
    ("pending", ("outcomes", "pending"), "", False),
    ("lost", ("outcomes", "lost"), "", False),
    ("rejected", ("outcomes", "rejected"), "", False),
    ("e2e p50", ("latency_ms", "e2e", "p50"), "ms", False),
    ("e2e p95", ("latency_ms", "e2e", "p95"), "ms", False),
    ("e2e p99", ("latency_ms", "e2e", "p99"), "ms", False),
    ("submit p95", ("latency_ms", "submit", "p95"), "ms", False),
    ("delivered rate", ("throughput", "delivered_rate"), "msg/s", True),
    ("peak backlog", ("throughput", "peak_backlog"), "", False),
    ("ESP attempts/msg", ("details", "esp_attempts_per_message"), "", False),
    ("max sustainable", ("capacity", "max_sustainable"), "msg/s", True),
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="rebuild every report of a run from its ledgers")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument(
        "--format",
        dest="formats",
        help=f"comma-separated subset of {','.join(_FORMATS)} (default: the run's, else all)",
    )
    p.set_defaults(func=cmd_report)

    p = subparsers.add_parser("compare", help="the change in the headline figures between two runs")
    p.add_argument("run_a", type=Path, metavar="RUN_A")
    p.add_argument("run_b", type=Path, metavar="RUN_B")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser("sizing", help="instances and ESP rate needed for a target volume")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--target", required=True, help="messages per period, e.g. 1000000/1h")
    p.add_argument("--headroom", default="30%", help="spare capacity on top of the target (default 30%%)")
    p.add_argument("--esp-rate", type=float, help="ESP sending-rate limit in msg/s (overrides the profile)")
    p.add_argument("--esp-profile", help="size against this ESP profile's limits (ses, sendgrid, ...)")
    p.add_argument(
        "--compare-profiles",
        action="store_true",
        help="also weigh the target against every ESP profile side by side (ESP selection)",
    )
    p.add_argument("--json", action="store_true", help="print the sizing as JSON")
    p.set_defaults(func=cmd_sizing)


def cmd_report(args: argparse.Namespace) -> int:
    from mailstorm.reports.analysis import report_spec
    from mailstorm.reports.builder import build
    from mailstorm.runinfo import load_run_info

    spec = report_spec(load_run_info(args.run_dir), None) if args.run_dir.is_dir() else None
    if args.formats:
        formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
        bad = [f for f in formats if f not in _FORMATS]
        if bad or not formats:
            raise UserError(
                f"--format: unknown format(s) {', '.join(bad) or '(none)'}; use {','.join(_FORMATS)}"
            )
        spec = ReportSpec(formats=formats, sizing=spec.sizing if spec else None)
    verdict = build(args.run_dir, report=spec)
    console = Console(soft_wrap=True)
    style = "bold green" if verdict.passed else "bold red"
    console.print(f"[{style}]{verdict.verdict.upper()}[/] {_one_line(verdict.figures)}")
    for fmt, path in verdict.files.items():
        console.print(f"  {fmt:5} {path}")
    return EXIT_OK if verdict.passed else EXIT_SLO_BREACHED


def _one_line(f: dict[str, Any]) -> str:
    o, load = f["outcomes"], f["load"]
    parts = [f"planned {load['planned']:,}", f"dropped {load['dropped']:,}"]
    parts += [
        f"{k} {o[k]:,}"
        for k in ("submitted", "delivered", "duplicated", "bounced", "pending", "lost", "rejected")
    ]
    if o.get("uncorrelated"):
        parts.append(f"uncorrelated {o['uncorrelated']:,}")
    failed = [s["name"] for s in f["slo"] if not s["passed"]]
    return ", ".join(parts) + (f"; breached: {', '.join(failed)}" if failed else "")


def figures_of(run_dir: Path) -> dict[str, Any]:
    """A run's figures: its report.json when it is current, else analysed from the ledgers."""
    from mailstorm.reports.analysis import SCHEMA_VERSION, analyze

    path = run_dir / "report.json"
    if path.is_file():
        try:
            figures = orjson.loads(path.read_bytes())
            if isinstance(figures, dict) and figures.get("schema_version") == SCHEMA_VERSION:
                return figures
        except orjson.JSONDecodeError:
            pass  # a damaged report is rebuilt from the ledgers below
    return analyze(run_dir).figures


def _get(f: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(f, dict):
            return None
        f = f.get(key)
    return f


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    rec_a = [x.get("time_to_recover_s") for x in a.get("faults") or []]
    rec_b = [x.get("time_to_recover_s") for x in b.get("faults") or []]
    extra = (
        ("slowest recovery", max(rec_a) if rec_a and None not in rec_a else None,
         max(rec_b) if rec_b and None not in rec_b else None, "s", False),
    )  # fmt: skip
    for label, path, unit, higher_better in HEADLINE:
        rows.append(_row(label, _get(a, path), _get(b, path), unit, higher_better))
    rows.extend(_row(*e) for e in extra)
    rows.append({"figure": "verdict", "a": a.get("verdict"), "b": b.get("verdict"), "unit": "", "delta": None,
                 "delta_pct": None, "better": None})  # fmt: skip
    return rows


def _row(label: str, va: Any, vb: Any, unit: str, higher_better: bool) -> dict[str, Any]:
    delta = pct = better = None
    if isinstance(va, int | float) and isinstance(vb, int | float):
        delta = round(vb - va, 3)
        pct = round(100.0 * delta / va, 2) if va else None
        better = None if delta == 0 else (delta > 0) == higher_better
    return {
        "figure": label,
        "a": va,
        "b": vb,
        "unit": unit,
        "delta": delta,
        "delta_pct": pct,
        "better": better,
    }


def cmd_compare(args: argparse.Namespace) -> int:
    fa, fb = figures_of(args.run_a), figures_of(args.run_b)
    rows = compare(fa, fb)
    if args.json:
        print(json.dumps({"a": str(args.run_a), "b": str(args.run_b), "rows": rows}, indent=2))
        return EXIT_OK
    from mailstorm.reports.render import num

    table = Table(title=f"{args.run_a.name}  →  {args.run_b.name}")
    for col, justify in (
        ("figure", "left"),
        ("A", "right"),
        ("B", "right"),
        ("change", "right"),
        ("%", "right"),
    ):
        table.add_column(col, justify=justify)
    for r in rows:
        style = "" if r["better"] is None else "green" if r["better"] else "red"
        delta = "" if r["delta"] is None else f"{r['delta']:+,.3g}"
        share = "" if r["delta_pct"] is None else f"{r['delta_pct']:+.1f}%"
        unit = f" {r['unit']}" if r["unit"] else ""
        a = num(r["a"]) if not isinstance(r["a"], str) else r["a"]
        b = num(r["b"]) if not isinstance(r["b"], str) else r["b"]
        table.add_row(r["figure"] + unit, a, b, f"[{style}]{delta}[/]" if style else delta, share)
    Console(soft_wrap=True).print(table)
    return EXIT_OK


def cmd_sizing(args: argparse.Namespace) -> int:
    from mailstorm.reports.analysis import analyze

    try:
        spec = SizingSpec(
            target=args.target,
            headroom=args.headroom,
            esp_rate=args.esp_rate,
            esp_profile=args.esp_profile,
            compare=args.compare_profiles,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else "sizing"
        raise UserError(f"{field}: {err['msg'].removeprefix('Value error, ')}") from None
    a = analyze(args.run_dir, report=ReportSpec(formats=("json",), sizing=spec))
    s = a.sizing
    assert s is not None  # asked for above
    if args.json:
        print(json.dumps(s.as_dict(), indent=2))
        return EXIT_OK
    console = Console(soft_wrap=True)
    inst = "?" if s.instances is None else str(s.instances)
    console.print(
        f"[bold]{s.target}[/] with {s.headroom:.0%} headroom: [bold]{inst} SUT instance(s)[/], "
        f"ESP sending rate [bold]{s.esp_rate_needed:,.2f} msg/s[/]"
    )
    for i, line in enumerate(s.arithmetic, 1):
        console.print(f"  {i}. {line}", highlight=False)
    console.print(f"per-instance capacity from: {s.per_instance_source}")
    if s.esp_limit_source:
        console.print(f"ESP limit from: {s.esp_limit_source}")
    console.print("assumptions:")
    for line in s.assumptions:
        console.print(f"  - {line}", highlight=False)
    if s.compare is not None:
        # A pipe or a CI log has no width: give the table room rather than wrapping every cell.
        wide = console if console.is_terminal else Console(soft_wrap=True, width=132)
        wide.print(profiles_table(s.compare, s.required_rate, s.messages))
    return EXIT_OK


def profiles_table(rows: list[dict[str, Any]], required_rate: float, messages: int) -> Table:
    """The ESP-selection table (reports.sizing_compare) for the terminal."""
    table = Table(
        title=f"every ESP profile for {messages:,} messages at {required_rate:,.2f} msg/s (with headroom)",
        title_justify="left",
    )
    table.add_column("profile")
    table.add_column("rate msg/s", justify="right")
    table.add_column("rate carries", justify="center")
    table.add_column("daily quota", justify="right")
    table.add_column("quota carries", justify="center")
    table.add_column("time for the target", justify="right")
    table.add_column("fake API")
    for r in rows:
        table.add_row(
            r["profile"],
            "-" if r["rate"] is None else f"{r['rate']:,.2f}",
            _yes_no(r["rate_ok"]),
            "-" if r["daily_quota"] is None else f"{r['daily_quota']:,}",
            _yes_no(r["daily_ok"]),
            "none published" if r["send_s"] is None else duration(r["send_s"]),
            r["api"] or "none (sizing only)",
        )
    return table


def _yes_no(ok: bool | None) -> str:
    return "?" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")
