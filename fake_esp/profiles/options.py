"""The fake ESP's command-line options for profiles, the HTTP APIs and webhooks (``mailstorm esp``).

--profile NAME      an ESP profile as the base (fake_esp/esps/NAME/profile.yaml): its limits and latency
                    become faults named profile.* installed first; --faults and the control API
                    come after and win (same name replaces); its max message size is the default
--rate N            messages/s (token bucket) instead of the profile's, over SMTP (key: client IP,
                    after DATA) and HTTP (key: API key); without --profile, generic-smtp's replies
--http-port P       serve the ESP HTTP APIs (every ESP home's api.py in mailstorm.fake_esp.esps: SendGrid,
                    SES v2, Mailgun, Postmark, Mailjet, Brevo, Elastic Email, SendPulse, Mandrill,
                    MailerSend, Resend, SparkPost, Postal, and HubSpot's and Klaviyo's rate-limit fakes)
                    on port P
--webhook-url URL   post event webhooks for every accepted message to URL (defaults otherwise)
--webhooks FILE     webhook settings as YAML (mailstorm.fake_esp.webhooks.spec.WebhookSpec);
                    --webhook-url wins
--list-profiles     print the profiles and exit
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from mailstorm.errors import ConfigError, UserError
from mailstorm.fake_esp.profiles import PROFILE_NAMES, list_profiles, load_profile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--http-port", type=int, help="serve the ESP HTTP APIs (every API in mailstorm.fake_esp.esps)"
    )
    p.add_argument("--profile", help=f"ESP profile as the base: {', '.join(PROFILE_NAMES)}")
    p.add_argument("--rate", type=float, help="messages/s limit (overrides the profile's), SMTP and HTTP")
    p.add_argument("--webhook-url", help="POST event webhooks for accepted messages to this URL")
    p.add_argument("--webhooks", type=Path, metavar="FILE", help="webhook settings (YAML)")
    p.add_argument("--list-profiles", action="store_true", help="list the ESP profiles and exit")


def apply(args: argparse.Namespace, fields: dict[str, Any]) -> None:
    """Add the http_port, profile (its faults first) and webhooks fields to an EspSpec field dict."""
    if args.http_port is not None:
        fields["http_port"] = args.http_port
    if args.rate is not None and not 0 < args.rate < math.inf:  # NaN fails too
        raise ConfigError(f"--rate: must be a finite number > 0 (messages/s), got {args.rate:g}")
    if args.profile is not None or args.rate is not None:
        try:
            profile = load_profile("generic-smtp" if args.profile is None else args.profile)
        except ConfigError as exc:
            raise ConfigError(f"--profile: {exc}") from None
        if args.profile is not None:
            fields["profile"] = profile.name
        fields["faults"] = [*profile.faults(rate=args.rate), *fields.get("faults", [])]
        if "max_message_size" not in fields and profile.limits.max_message_size is not None:
            fields["max_message_size"] = profile.limits.max_message_size
    hooks = _webhooks(args)
    if hooks is not None:
        fields["webhooks"] = hooks


def _webhooks(args: argparse.Namespace) -> dict[str, Any] | None:
    data: dict[str, Any] | None = None
    if args.webhooks is not None:
        try:
            text = args.webhooks.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--webhooks {args.webhooks}: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--webhooks {args.webhooks}: not UTF-8 text (byte {exc.start})") from None
        from mailstorm.fake_esp.webhooks.spec import parse_webhook_spec

        data = parse_webhook_spec(text, where=f"--webhooks {args.webhooks}: webhooks").model_dump()
    if args.webhook_url is not None:
        data = {**(data or {}), "url": args.webhook_url}
    return data


def profiles_table() -> str:
    """What ``--list-profiles`` prints: one line per profile with its headline limits and its title."""
    head = ("name", "api", "rate/s", "max conn", "msgs/conn", "max size", "rcpts", "description")
    profiles = list_profiles()
    w = max(len(p.name) for p in profiles)  # the longest name sets the first column
    lines = [f"{head[0]:<{w}} " + "{:<12} {:>7} {:>8} {:>9} {:>10} {:>5}  {}".format(*head[1:])]
    for p in profiles:
        lim = p.limits
        size = f"{lim.max_message_size // (1024 * 1024)} MiB" if lim.max_message_size else "-"
        lines.append(
            f"{p.name:<{w}} {p.api or '-':<12} {_n(lim.rate):>7} {_n(lim.max_connections):>8} "
            f"{_n(lim.messages_per_connection):>9} {size:>10} {_n(lim.max_recipients):>5}  {p.title}"
        )
    return "\n".join(lines)


def _n(value: float | int | None) -> str:
    return "-" if value is None else f"{value:g}"
