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
                  reorder probabilities (reorder: the event is held back and posted after the next)
retry_time_scale  the ESP's retry schedule (fake_esp/esps/*/profile.yaml webhook) times this: 1 = real
                  minutes and hours, 0.001 = the same shape in milliseconds for a test
timeout_s         a POST that takes longer failed (and is retried)
seed              the events' draws (per recipient) and the poster's RNG (faults): same seed, same
                  decisions
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS
from mailstorm.yamlload import safe_load

# The formats' names as one Literal (a runtime-built one: a new ESP home adds its name here, and to the
# JSON Schema of scenario files).
FormatName = Literal[WEBHOOK_FORMATS.names()]  # type: ignore[valid-type]


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


class WebhookSpec(_Frozen):
    url: str
    format: FormatName | None = None
    events: EventMix = EventMix()
    faults: WebhookFaults = WebhookFaults()
    retry_time_scale: float = Field(1.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    signing_key: str = "mailstorm-webhook-signing-key"
    seed: int = 0

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
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
