"""The runner's subcommands: ``mailstorm run``, ``validate``, ``schema`` and ``cleanup``.

A scenario argument is a file path or the name of a ready scenario in ``scenarios/library`` (``smoke``,
``spike``...); ``mailstorm run`` with none runs the demo. Errors are ``UserError``s (one line, exit 2),
printed by the dispatcher in ``mailstorm.cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mailstorm.scenarios
from mailstorm.errors import EXIT_OK, UserError
from mailstorm.harness.leftovers import end, find, show
from mailstorm.harness.run import Run
from mailstorm.harness.scenario import Scenario, check_overrides, json_schema, validate_document
from mailstorm.yamlload import load_yaml

LIBRARY = Path(mailstorm.scenarios.__file__).parent / "library"
DEMO = "demo"


def resolve_path(arg: str | None) -> Path:
    """A path as given, or a library scenario by name (``smoke`` -> scenarios/library/smoke.yaml)."""
    if arg is None:
        return LIBRARY / f"{DEMO}.yaml"
    path = Path(arg)
    if path.exists() or path.suffix in (".yaml", ".yml") or "/" in arg:
        return path
    named = LIBRARY / f"{arg}.yaml"
    if named.exists():
        return named
    known = ", ".join(sorted(p.stem for p in LIBRARY.glob("*.yaml")))
    raise UserError(f"{arg}: no such file, nor a library scenario (library: {known})")


def load(arg: str | None, *, seed: int | None = None, duration: str | None = None) -> tuple[Scenario, object]:
    doc = load_yaml(resolve_path(arg))
    return validate_document(doc, seed=seed, duration=check_overrides(duration)), doc


def cmd_run(args: argparse.Namespace) -> int:
    scenario, doc = load(args.file, seed=args.seed, duration=args.duration)
    summary = _summary_file(args.summary_file)
    run = Run(
        scenario, out=Path(args.out), allow_remote=args.allow_remote, document=doc, progress=not args.quiet
    )
    code = run.execute()
    if summary is not None:
        write_summary(run, summary)
    return code


def _summary_file(arg: str | None) -> Path | None:
    """``--summary-file``: checked before the run starts (a CI step learns of a typo in seconds)."""
    if arg is None:
        return None
    path = Path(arg)
    if path.is_dir() or not path.parent.is_dir():
        raise UserError(f"--summary-file {arg}: not a file in an existing directory")
    return path


def write_summary(run: Run, path: Path) -> None:
    """Append the run's report.md to ``path`` (GitHub's $GITHUB_STEP_SUMMARY is appended to by every
    step that writes it); a run that made no report says why in one line instead."""
    from mailstorm.reports import render  # the reports are built by now: numpy is loaded already

    analysis = run.verdict.analysis if run.verdict is not None else None
    text = render.markdown(analysis) if analysis is not None else f"mailstorm: no report: {run.reason}\n"
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        sys.stderr.write(f"mailstorm: --summary-file {path}: {exc.strerror or exc}\n")


def cmd_validate(args: argparse.Namespace) -> int:
    for arg in args.files:
        scenario, doc = load(arg)
        # The same checks a run makes before it starts anything (target actions, allowed addresses).
        Run(scenario, allow_remote=args.allow_remote, document=doc).preflight()
        steps = len(scenario.chaos)
        print(
            f"{resolve_path(arg)}: ok: {scenario.name}, {scenario.duration:g}s load, target "
            f"{scenario.target.kind}, {steps} chaos step{'s' if steps != 1 else ''}"
            + (f", {len(scenario.campaign)} campaign(s)" if scenario.campaign else "")
        )
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace) -> int:
    """End whatever killed runs under ``--out`` left running (mailstorm.harness.leftovers), one line each."""
    found = find(Path(args.out))
    lines = end(found)
    for line in lines:
        print(line)
    for run in sorted(found.skipped):
        print(f"skipped {show(run)}: its runner is still running")
    if not lines:
        print("nothing to clean up")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    json.dump(json_schema(), sys.stdout, indent=2 if args.indent else None)
    sys.stdout.write("\n")
    return EXIT_OK


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a scenario: fake ESP, SUT, load, chaos timeline, drain, reports, verdict",
        description="Run a scenario file (or a library scenario by name; none: the demo). Exit 0 when the "
        "SLOs held, 1 when one was breached, 2 on bad input, 3 when mailstorm itself failed.",
    )
    run.add_argument("file", nargs="?", help="scenario file or library name (default: the demo)")
    run.add_argument("--out", default="runs", help="where run directories go (default: runs)")
    run.add_argument("--seed", type=_seed, help="override the scenario's seed")
    run.add_argument("--duration", help="override the load duration (30, 30s, 2m)")
    run.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow non-loopback targets (the scenario must say allow_remote: true as well)",
    )
    run.add_argument("--quiet", action="store_true", help="no live progress")
    run.add_argument(
        "--summary-file",
        metavar="PATH",
        help="also append report.md to PATH, where a CI system shows it (GitHub: $GITHUB_STEP_SUMMARY)",
    )
    run.set_defaults(func=cmd_run)

    validate = subparsers.add_parser("validate", help="check scenario files without running them")
    validate.add_argument("files", nargs="+", metavar="FILE", help="scenario file(s) or library names")
    validate.add_argument("--allow-remote", action="store_true", help="as for run")
    validate.set_defaults(func=cmd_validate)

    cleanup = subparsers.add_parser(
        "cleanup",
        help="end what killed runs left running (processes, Postfix, containers)",
        description="Find and end whatever runs under --out left running when their runner was killed: "
        "processes marked with or naming a run directory, Postfix instances whose MAIL_CONFIG is in one, "
        "containers labelled with one. Runs whose runner still lives are skipped. One line per thing ended.",
    )
    cleanup.add_argument("--out", default="runs", help="where run directories are (default: runs)")
    cleanup.set_defaults(func=cmd_cleanup)

    schema = subparsers.add_parser("schema", help="print the JSON Schema of scenario files")
    schema.add_argument("--indent", action="store_true", help="pretty-print")
    schema.set_defaults(func=cmd_schema)
