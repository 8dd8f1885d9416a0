"""``python -m mailstorm.harness.reference``: the reference pipeline's command line (one process, one
queue).

Relaying to an ESP that requires TLS and AUTH: ``--relay-tls starttls|implicit --relay-ca CA.pem`` and
the login in ``--relay-auth USER:PASSWORD`` or, kept off the command line, ``$MAILSTORM_RELAY_AUTH``.
The ESP's webhooks (POST /webhooks/<format> on --http-port) are checked with the signing key in
``--webhook-key`` or ``$MAILSTORM_WEBHOOK_KEY``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from mailstorm.errors import EXIT_HARNESS_FAILED, EXIT_OK, ConfigError, MailstormError
from mailstorm.harness.reference.config import (
    DEFAULT_RELAY_NETWORKS,
    RELAY_AUTH_ENV,
    WEBHOOK_KEY_ENV,
    PipelineConfig,
    RelayTarget,
    split_hostport,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mailstorm.harness.reference", description=__doc__)
    p.add_argument("--listen", required=True, metavar="HOST:PORT", help="SMTP listener (loopback by default)")
    p.add_argument("--queue", required=True, type=Path, metavar="PATH", help="SQLite queue (resumed)")
    p.add_argument(
        "--relay",
        required=True,
        action="append",
        metavar="URL",
        help="smtp://HOST:PORT or http://HOST:PORT[/PATH]; repeated: fallbacks in order (failover)",
    )
    p.add_argument(
        "--failover-after",
        type=int,
        default=3,
        metavar="N",
        help="consecutive failed attempts through the active relay before the next one (default 3)",
    )
    p.add_argument(
        "--failback-probe",
        type=float,
        default=2.0,
        metavar="S",
        help="while failed over, one message every S seconds is tried through the primary (default 2)",
    )
    p.add_argument("--ledger", required=True, type=Path, metavar="DIR", help="ledger directory")
    p.add_argument("--source", default="sut", help="ledger source (file) name (default: sut)")
    p.add_argument("--concurrency", type=int, default=20, help="relay workers = connections to the ESP")
    p.add_argument("--max-attempts", type=int, default=25, help="attempts before a message bounces")
    p.add_argument("--backoff-base", type=float, default=0.2, metavar="S", help="first retry delay (s)")
    p.add_argument("--backoff-max", type=float, default=5.0, metavar="S", help="retry delay cap (s)")
    p.add_argument("--relay-timeout", type=float, default=10.0, metavar="S", help="per-command relay timeout")
    p.add_argument("--http-port", type=int, default=None, help="serve GET /health and /metrics on this port")
    p.add_argument("--queue-interval", type=float, default=1.0, metavar="S", help="sut.queue record period")
    p.add_argument("--seed", type=int, default=0, help="seed of the retry jitter")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback listener or relay host")
    p.add_argument(
        "--relay-networks",
        default=",".join(DEFAULT_RELAY_NETWORKS),
        metavar="CIDR[,CIDR]",
        help="peers allowed to relay (default: loopback); everyone else gets 554 at RCPT",
    )
    p.add_argument("--api-key", help="Bearer key for the HTTP relay (default: the --relay-auth password)")
    p.add_argument("--max-size", type=int, default=10 * 1024 * 1024, help="largest message accepted (bytes)")
    p.add_argument("--fsync", action="store_true", help="fsync every queue commit (survives power loss)")
    p.add_argument("--grace", type=float, default=5.0, metavar="S", help="SIGTERM: time to finish attempts")
    p.add_argument(
        "--relay-tls", choices=("off", "starttls", "implicit"), default="off", help="TLS towards the ESP"
    )
    p.add_argument("--relay-ca", type=Path, metavar="PATH", help="CA file to trust for the relay's TLS")
    p.add_argument(
        "--relay-auth", metavar="USER:PASSWORD", help=f"AUTH towards the ESP (or ${RELAY_AUTH_ENV})"
    )
    p.add_argument(
        "--webhook-key",
        metavar="KEY",
        help=f"the ESP's webhook signing key, checked on every post (or ${WEBHOOK_KEY_ENV}; unset: none)",
    )
    return p


def relay_auth(flag: str | None) -> tuple[str, str] | None:
    text = flag if flag is not None else os.environ.get(RELAY_AUTH_ENV) or None
    if text is None:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--relay-auth: expected USER:PASSWORD (a colon between them)")
    return user, password


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    host, port = split_hostport(args.listen, "--listen")
    auth = relay_auth(args.relay_auth)
    # An ESP that checks keys checks the relay's too: SendGrid's API key is its SMTP password.
    api_key = args.api_key or (auth[1] if auth is not None else "mailstorm-reference")
    try:
        return PipelineConfig(
            listen_host=host,
            listen_port=port,
            queue_path=args.queue,
            relays=tuple(RelayTarget.parse(url) for url in args.relay),
            ledger_dir=args.ledger,
            source=args.source,
            concurrency=args.concurrency,
            max_attempts=args.max_attempts,
            backoff_base_s=args.backoff_base,
            backoff_max_s=args.backoff_max,
            relay_timeout_s=args.relay_timeout,
            http_port=args.http_port,
            queue_interval_s=args.queue_interval,
            seed=args.seed,
            allow_remote=args.allow_remote,
            relay_networks=tuple(n.strip() for n in args.relay_networks.split(",") if n.strip()),
            api_key=api_key,
            max_message_size=args.max_size,
            fsync=args.fsync,
            grace_s=args.grace,
            failover_after=args.failover_after,
            failback_probe_s=args.failback_probe,
            relay_tls=args.relay_tls,
            relay_ca=args.relay_ca,
            relay_auth=auth,
            webhook_key=args.webhook_key or os.environ.get(WEBHOOK_KEY_ENV) or None,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "arguments"
        raise ConfigError(f"--{field.replace('_', '-')}: {err['msg']}") from None


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = config_from_args(build_parser().parse_args(argv))
    except MailstormError as exc:
        sys.stderr.write(f"reference: {exc}\n")
        return exc.exit_code
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every session at INFO
    from mailstorm.harness.reference.pipeline import Pipeline

    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    try:
        run(Pipeline(cfg).run())
    except OSError as exc:  # the port is taken, the queue directory is not writable...
        sys.stderr.write(f"reference: {exc}\n")
        return EXIT_HARNESS_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
