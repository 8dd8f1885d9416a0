"""WebhookSpec: where and how the fake ESP posts events back (typed, frozen; parsed once at the edge).

url               where to POST (loopback unless allowed: mailstorm.netguard)
format            a registered webhook format (mailstorm.fake_esp.webhooks.formats.WEBHOOK_FORMATS: one
                  per ESP home); default: the API the message came in by, else the profile's API (SMTP
                  acceptances); none of those: no webhooks for that message
events            probabilities per accepted recipient (mailstorm.fake_esp.webhooks.outcomes, seeded per
                  recipient): bounce (hard), soft_bounce, else delivered; deferred (a deferred event
                  before the outcome); open, click (after an open), complaint and unsubscribe after a
                  delivery
faults            delay_ms (+ jitter_ms uniform) before the first attempt; duplicate / drop /
                  reorder probabilities (reorder: the event is held back and posted after the next);
                  bad_signature: the POST is signed with the wrong secrets and carries wrong
                  credentials (its esp.webhook records say fault bad_signature: a receiver that
                  verifies is right to refuse it)
retry_time_scale  the ESP's retry schedule (fake_esp/esps/*/profile.yaml webhook) times this: 1 = real
                  minutes and hours, 0.001 = the same shape in milliseconds for a test
timeout_s         a POST that takes longer failed (and is retried)
seed              the events' draws (per recipient) and the poster's RNG (faults): same seed, same
                  decisions
signing_key       the shared secret of the formats that sign with one (Mailgun's webhook signing key,
                  Mandrill's webhook key, MailerSend, Resend's whsec_...; Postal: an RSA key's PEM;
                  SparkPost: its basic-auth user:password)
sendgrid_key      the PEM of the ECDSA P-256 private key SendGrid's Signed Event Webhook signs with;
                  unset: made per run (mailstorm.fake_esp.webhooks.signing)
sns_signature_version  1 (SHA1withRSA, SNS's default) or 2 (SHA256withRSA) for SES's SNS messages
keys_file         where the run's webhook keys are kept (default <ledger>/webhook-keys.json)
via               where the POSTs go instead of url (the chaos proxy fronting the webhook path: the
                  runner sets it); url stays what the ESP was configured with, what Mandrill signs and
                  the ledger records
auth              credentials every POST carries, for receivers that check them: basic "user:password",
                  or bearer "token" (one of those two), and/or headers {Name: value}; never in the ledger
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS
from mailstorm.yamlload import safe_load

# The formats' names as one Literal (a runtime-built one: a new ESP home adds its name here, and to the
# JSON Schema of scenario files).
FormatName = Literal[WEBHOOK_FORMATS.names()]  # type: ignore[valid-type]
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 5.1: a field name is a token


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EventMix(_Frozen):
    bounce: float = Field(0.0, ge=0, le=1)
    soft_bounce: float = Field(0.0, ge=0, le=1)
    deferred: float = Field(0.0, ge=0, le=1)
    open: float = Field(0.0, ge=0, le=1)
    click: float = Field(0.0, ge=0, le=1)
    complaint: float = Field(0.0, ge=0, le=1)
    unsubscribe: float = Field(0.0, ge=0, le=1)


class WebhookFaults(_Frozen):
    delay_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    duplicate: float = Field(0.0, ge=0, le=1)
    drop: float = Field(0.0, ge=0, le=1)
    reorder: float = Field(0.0, ge=0, le=1)
    bad_signature: float = Field(0.0, ge=0, le=1)


class WebhookAuth(_Frozen):
    basic: str | None = None
    bearer: str | None = Field(None, min_length=1)
    headers: dict[str, str] = {}

    @field_validator("basic")
    @classmethod
    def _user_password(cls, v: str | None) -> str | None:
        if v is not None and ":" not in v:
            raise ValueError("must be user:password")
        return v

    @field_validator("bearer")
    @classmethod
    def _one_scheme(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("basic") is not None:
            raise ValueError("basic and bearer both set: a POST carries one Authorization")
        return v

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name")
            if "\n" in value or "\r" in value:
                raise ValueError(f"{name}: a header value is one line")
        return v


class WebhookSpec(_Frozen):
    url: str
    format: FormatName | None = None
    events: EventMix = EventMix()
    faults: WebhookFaults = WebhookFaults()
    retry_time_scale: float = Field(1.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    signing_key: str = "mailstorm-webhook-signing-key"
    sendgrid_key: str | None = None
    sns_signature_version: Literal[1, 2] = 1
    keys_file: Path | None = None
    auth: WebhookAuth | None = None
    via: str | None = None
    seed: int = 0

    @field_validator("url", "via")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("sendgrid_key")
    @classmethod
    def _p256(cls, v: str | None) -> str | None:
        if v is not None:
            from mailstorm.fake_esp.webhooks.signing import sendgrid_key_pem  # cryptography: only when set

            try:
                sendgrid_key_pem(v)
            except ConfigError as exc:
                raise ValueError(str(exc).partition(": ")[2]) from None
        return v

    @field_validator("auth")
    @classmethod
    def _auth_once(cls, v: WebhookAuth | None, info: ValidationInfo) -> WebhookAuth | None:
        url = info.data.get("url") or ""
        if v is not None and (v.basic or v.bearer) and "@" in url.split("/")[2]:
            raise ValueError("the url carries credentials (user:password@) already")
        return v


def parse_webhook_spec(data: Any, *, where: str = "webhooks") -> WebhookSpec:
    """Validate a mapping (from YAML/JSON or the CLI) into a WebhookSpec; ConfigError names the field."""
    if isinstance(data, str):
        try:
            data = safe_load(data)
        except yaml.YAMLError as exc:  # its text spans lines: keep the error one line
            mark = getattr(exc, "problem_mark", None)
            line = f" line {mark.line + 1}" if mark is not None else ""
            why = getattr(exc, "problem", None) or exc
            raise ConfigError(f"{where}:{line} not valid YAML ({why})") from None
        except RecursionError:  # "[[[[..." thousands deep: the parser recurses once per level
            raise ConfigError(f"{where}: not valid YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping with at least url")
    try:
        return WebhookSpec.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where}.{loc}: {err['msg'].removeprefix('Value error, ')}") from None
