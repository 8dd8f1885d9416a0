"""The ``mailstorm`` command: one dispatcher, each subcommand owned by the package that implements it.

A subcommand module exposes ``register(subparsers)``, which adds its parser(s) and sets ``func`` (taking
the parsed namespace, returning an exit code). Errors the user caused print as one line and exit 2;
failures of mailstorm itself exit 3; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from mailstorm.errors import EXIT_BAD_INPUT, EXIT_HARNESS_FAILED, EXIT_SIGNALLED, MailstormError

# Modules that own subcommands, in the order their commands are listed in --help.
COMMAND_MODULES: tuple[str, ...] = (
    "mailstorm.harness.commands",  # run, validate, schema
    "mailstorm.fake_esp.cli",  # esp
    "mailstorm.scenarios.cli",  # worker
    "mailstorm.reports.cli",  # report, compare, sizing
)


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with a one-line error naming the argument (its default) without usage spam."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"mailstorm: error: {message}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mailstorm", description="Load and chaos testing for email pipelines.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or 0)
    except MailstormError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"mailstorm: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("mailstorm: interrupted\n")
        return EXIT_SIGNALLED + signal.SIGINT
    except Exception as exc:  # the last line of defence: never a traceback to a user
        if args.debug:
            raise
        sys.stderr.write(f"mailstorm: internal error: {type(exc).__name__}: {exc} (run with --debug)\n")
        return EXIT_HARNESS_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
