"""``mailstorm esp`` (and ``python -m mailstorm.fake_esp``): run a fake ESP from the command line.

    mailstorm esp --smtp-port 2525 --control-port 8025 --ledger DIR --seed 1 --faults faults.yaml \\
                  --processes 2

``--faults FILE`` is YAML: a list of fault specs, or a mapping with a ``faults`` list
(mailstorm.fake_esp.spec).

TLS and AUTH as production ESPs require them:

    mailstorm esp --tls starttls --require-tls --auth apikey:SG.test --profile sendgrid --http-port 8080

``--tls starttls|implicit`` makes a CA and certificates at start and writes the CA to ``--tls-ca``
(default ``<ledger>/ca.pem``); ``--auth USER:PASSWORD`` (repeatable) makes AUTH required and API keys
checked (mailstorm.fake_esp.auth). Credentials can also come from the environment, one per line in
``MAILSTORM_ESP_AUTH`` (how ``EspProcess`` passes them: a command line is visible to every local user).
Command-line flags become an ``EspSpec`` in ``spec_from_args``; a listener that needs more flags (the
HTTP APIs, profiles) adds them in ``add_arguments`` and its fields in ``spec_fields``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mailstorm.errors import EXIT_OK, EXIT_SIGNALLED, ConfigError, MailstormError, UserError
from mailstorm.fake_esp.auth import parse_credential_text
from mailstorm.fake_esp.launch import AUTH_ENV
from mailstorm.fake_esp.profiles import options as profile_options
from mailstorm.fake_esp.spec import FAULT_TYPES, EspSpec, parse_esp_spec, parse_fault
from mailstorm.yamlload import safe_load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--smtp-port", type=int, default=2525, help="SMTP port (default 2525)")
    p.add_argument("--control-port", type=int, default=8025, help="control API port (default 8025)")
    p.add_argument(
        "--bind",
        help="address to listen on (default 127.0.0.1; non-loopback needs --token; --join: --advertise)",
    )
    p.add_argument("--token", help="bearer token every control API request must carry")
    p.add_argument(
        "--no-token",
        action="store_true",
        help="listen off loopback with no control token: for a container, whose published ports you choose",
    )
    p.add_argument("--ledger", type=Path, help="ledger directory (default ./esp-ledger)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault engine's RNG (default 0)")
    p.add_argument(
        "--name", help="its name among several ESPs of one run: ledger files esp-NAME-smtp-N.jsonl"
    )
    p.add_argument(
        "--faults",
        type=Path,
        metavar="FILE",
        help=f"YAML file of faults installed at start (types: {', '.join(FAULT_TYPES)})",
    )
    p.add_argument(
        "--processes", type=int, default=1, help="SMTP worker processes on one port (SO_REUSEPORT)"
    )
    p.add_argument("--max-message-size", type=int, help="bytes; larger messages get 552 (default 10 MiB)")
    p.add_argument("--max-recipients", type=int, help="RCPT per message; past it 452 (default 1000)")
    p.add_argument("--idle-timeout", type=float, help="s without a complete command before a session closes")
    p.add_argument("--store-bodies", type=Path, metavar="DIR", help="keep every accepted body in DIR")
    p.add_argument(
        "--keep-messages",
        type=int,
        metavar="N",
        help="latest messages each worker keeps for GET /messages (default 10000; 0: none)",
    )
    p.add_argument("--correlation-header", help="header carrying the correlation id (default X-Mailstorm-Id)")
    p.add_argument(
        "--correlation",
        choices=("header", "recipient", "body"),
        help="carrier of the correlation id read first: header (default), recipient (local+ID@domain), body",
    )
    p.add_argument("--hostname", help="name in the banner and EHLO answer")
    p.add_argument(
        "--tls",
        choices=("off", "starttls", "implicit"),
        default="off",
        help="TLS on the SMTP port (STARTTLS, or implicit as on port 465); the HTTP APIs become https",
    )
    p.add_argument("--require-tls", action="store_true", help="530 to MAIL and AUTH before STARTTLS")
    p.add_argument("--tls-ca", type=Path, metavar="PATH", help="write the CA here (default <ledger>/ca.pem)")
    p.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve this PEM certificate (and key)")
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the private key of --tls-cert, if apart")
    p.add_argument(
        "--auth",
        action="append",
        default=[],
        metavar="USER:PASSWORD",
        help=f"require AUTH and API keys: these credentials (repeatable; also ${AUTH_ENV}, one per line)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every session")
    join = p.add_argument_group("serving a run from this host (mailstorm.harness.esp_join)")
    join.add_argument(
        "--join", metavar="URL", help="join the run whose runner is at URL (run.json: join.url)"
    )
    join.add_argument("--advertise", metavar="ADDR", help="this host's address as esp.hosts lists it")
    join.add_argument(
        "--run-token-file", type=Path, metavar="FILE", help="the run token (else $MAILSTORM_RUN_TOKEN)"
    )
    join.add_argument(
        "--join-wait", type=float, default=300.0, metavar="S", help="wait for the runner (default 300)"
    )
    join.add_argument("--allow-remote", action="store_true", help="allow a runner off this machine")
    profile_options.add_arguments(p)  # --profile --rate --http-port --webhook-url --webhooks --list-profiles


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "esp",
        help="run a fake ESP (SMTP with a fault engine, control API, ledger)",
        description="Run a fake ESP: an SMTP server that injects faults, driven by a control API.",
    )
    add_arguments(p)
    p.set_defaults(func=run)


def load_faults_file(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--faults {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--faults {path}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"--faults {path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    except RecursionError:  # "[[[[..." thousands deep: the parser recurses once per level
        raise ConfigError(f"--faults {path}: not valid YAML (nested too deeply)") from None
    if isinstance(data, dict) and set(data) <= {"faults"}:
        data = data.get("faults")
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(f"--faults {path}: expected a list of faults (or a mapping with 'faults')")
    try:
        return [parse_fault(item, where=f"faults[{i}]") for i, item in enumerate(data)]
    except ConfigError as exc:
        raise ConfigError(f"--faults {path}: {exc}") from None


def spec_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "smtp_port": args.smtp_port,
        "control_port": args.control_port,
        "token": args.token,
        "seed": args.seed,
        "processes": args.processes,
        "ledger": args.ledger,
        "store_bodies": args.store_bodies,
    }
    options = (
        "name", "max_message_size", "max_recipients", "idle_timeout", "correlation_header", "correlation",
        "keep_messages",
    )  # fmt: skip
    for name in (*options, "hostname", "bind"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.faults is not None:
        fields["faults"] = load_faults_file(args.faults)
    fields |= tls_fields(args)
    fields["auth"] = credentials(args.auth, os.environ.get(AUTH_ENV, ""))
    profile_options.apply(args, fields)  # the profile's faults go first: --faults override them by name
    return fields


def tls_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The TLS flags; a certificate or key file that is not there is named now, before anything starts."""
    fields: dict[str, Any] = {"tls": args.tls, "require_tls": args.require_tls}
    for flag, name in (("--tls-ca", "tls_ca"), ("--tls-cert", "tls_cert"), ("--tls-key", "tls_key")):
        path = getattr(args, name)
        if path is None:
            continue
        if name != "tls_ca" and not path.is_file():
            raise UserError(f"{flag} {path}: {'not a file' if path.exists() else 'no such file'}")
        if name == "tls_ca" and path.is_dir():
            raise UserError(f"{flag} {path}: is a directory (give the path of the file to write)")
        fields[name] = path
    return fields


def credentials(flags: list[str], env: str) -> list[Any]:
    """``--auth`` values and the lines of $MAILSTORM_ESP_AUTH as credentials; one line naming the flag
    (never echoing a password) when one is not USER:PASSWORD."""
    out = []
    for where, texts in (("--auth", flags), (f"${AUTH_ENV}", [t for t in env.splitlines() if t.strip()])):
        for i, text in enumerate(texts):
            try:
                out.append(parse_credential_text(text))
            except ValueError as exc:
                nth = f" (value {i + 1})" if len(texts) > 1 else ""
                raise ConfigError(f"{where}{nth}: {exc}") from None
    return out


def spec_from_args(args: argparse.Namespace) -> EspSpec:
    try:
        return parse_esp_spec(spec_fields(args))
    except ConfigError as exc:
        # "smtp_port: ..." -> "--smtp-port: ...": name the flag the user typed.
        field, sep, rest = str(exc).partition(": ")
        if sep and field.isidentifier():
            raise ConfigError(f"--{field.replace('_', '-')}: {rest}") from None
        raise


def make_dirs(spec: EspSpec, default_ledger: Path) -> None:
    """Make the ledger and bodies directories before anything listens: a path that cannot be written is
    the user's to fix (one line, exit 2), not a crash of a worker."""
    for flag, path in (("--ledger", spec.ledger or default_ledger), ("--store-bodies", spec.store_bodies)):
        if path is None:
            continue
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"{flag} {path}: cannot make the directory: {exc.strerror or exc}") from None
        if not os.access(path, os.W_OK):
            raise UserError(f"{flag} {path}: the directory is not writable")


def run(args: argparse.Namespace) -> int:
    from mailstorm.fake_esp.server import (  # the server stack is only imported when it runs
        DEFAULT_LEDGER,
        serve,
    )

    if args.list_profiles:
        print(profile_options.profiles_table())
        return EXIT_OK
    if args.join:  # the run's runner says what to serve (the harness is the roof: imported only here)
        from mailstorm.harness.esp_join import join

        return join(args)

    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every session at INFO
    spec = spec_from_args(args)
    make_dirs(spec, DEFAULT_LEDGER)
    return serve(spec, tokenless=args.no_token)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mailstorm.fake_esp``: the same command as ``mailstorm esp``, with the same errors."""
    from mailstorm.cli import _Parser

    parser = _Parser(prog="python -m mailstorm.fake_esp", description="Run a fake ESP.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except MailstormError as exc:
        if args.debug:
            raise
        sys.stderr.write(f"fake_esp: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_SIGNALLED + signal.SIGINT
