"""ESP profiles: each ESP's published limits, failure replies and latency as data (YAML), and their loader.

A profile is the ``profile.yaml`` of an ESP's home (``fake_esp/esps/<name>/profile.yaml``, beside its
HTTP API and webhook format); ``PROFILES`` lists the homes that have one (``generic_smtp/`` is the
``generic-smtp`` profile: a ``_`` in a folder's name is a ``-`` in the profile's) and ``load_profile``
reads one by name, from a checkout or an installed wheel alike (importlib.resources).

A profile is the *base* a fake ESP starts from: ``Profile.faults(rate=...)`` turns its limits and latency
into fault specs (dicts in the shape of ``mailstorm.fake_esp.spec.FaultSpec``, named ``profile.*``) that the
engine
installs first; faults from the command line or the scenario come after and win (same name replaces).
``Profile.http`` holds that ESP's HTTP answers for throttling, outage, auth failure and oversize, used by
the HTTP APIs (mailstorm.fake_esp.http) when a fault fires on the ``http`` phase.

Every number in a YAML file carries a comment naming its source (a key of the file's ``sources`` map);
``tests/fake_esp/test_profiles.py`` checks that.
"""

from __future__ import annotations

import importlib.util
import math
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailstorm import replies
from mailstorm.errors import ConfigError
from mailstorm.registry import Registry, home_names
from mailstorm.replies import parse_reply

ESPS = "mailstorm.fake_esp.esps"


def _find_profiles() -> None:
    for home in home_names(ESPS):
        path = resources.files(f"{ESPS}.{home}").joinpath("profile.yaml")
        if path.is_file():
            PROFILES.add(home.replace("_", "-"), path)


PROFILES: Registry[Traversable] = Registry("ESP profile", discover=_find_profiles)
PROFILE_NAMES: tuple[str, ...] = PROFILES.names()


def has_api(name: str) -> bool:
    """Whether ESP ``name``'s home has an HTTP API module (found without importing it: no aiohttp here)."""
    home = name.replace("-", "_")
    return home in home_names(ESPS) and importlib.util.find_spec(f"{ESPS}.{home}.api") is not None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Window(_Frozen):
    """One published fixed window: at most ``limit`` messages per ``window`` (second, minute, hour, day)."""

    limit: int = Field(ge=1)
    window: Literal["second", "minute", "hour", "day"]


class Limits(_Frozen):
    """What the ESP allows; None = no published limit (the fake then enforces none)."""

    rate: float | None = Field(None, gt=0, description="messages per second (token bucket refill)")
    burst: int | None = Field(None, ge=1, description="token bucket depth; default: 0.1 s worth")
    daily_quota: int | None = Field(None, ge=1, description="messages per UTC day (a quota fault)")
    windows: list[Window] = Field(
        default_factory=list, description="published fixed windows (burst + steady pairs): quota faults"
    )
    over_quota: Literal["refuse", "queue"] = Field(
        "refuse", description="past a quota: refuse (SES), or accept and deliver later (Mandrill's backlog)"
    )
    max_connections: int | None = Field(None, ge=1, description="concurrent SMTP connections")
    messages_per_connection: int | None = Field(None, ge=1)
    max_message_size: int | None = Field(None, ge=1, description="bytes")
    max_recipients: int | None = Field(None, ge=1, description="per message (to + cc + bcc)")


class SmtpReplies(_Frozen):
    """The SMTP replies this ESP gives; each must parse as an SMTP reply (mailstorm.replies.parse_reply)."""

    throttle: str
    outage: str
    auth_failure: str  # 535: a wrong user or password (mailstorm esp --auth)
    auth_required: str  # 530: MAIL before AUTH when credentials are configured
    tls_required: str  # 530: MAIL or AUTH before STARTTLS with --require-tls
    oversize: str
    too_many_connections: str
    too_many_messages: str
    too_many_recipients: str
    quota: str | None = None  # past a quota window (SES: SES_DAILY_QUOTA); default: the throttle reply

    @field_validator("*")
    @classmethod
    def _is_reply(cls, v: str | None) -> str | None:
        if v is None:
            return v
        # A name of a mailstorm.replies constant (the one place reply strings are spelled), or a literal.
        const = getattr(replies, v, None) if v.isidentifier() else None
        if isinstance(const, replies.Reply):
            return str(const)
        parse_reply(v)
        return v


class HttpReply(_Frozen):
    """One HTTP answer: status, the ESP's error code/type (if it has one) and message."""

    status: int = Field(ge=400, le=599)
    message: str
    code: str | int | None = None


class HttpReplies(_Frozen):
    throttle: HttpReply
    outage: HttpReply
    auth_failure: HttpReply
    oversize: HttpReply
    retry_after_s: int = Field(1, ge=0, description="Retry-After sent with a throttling 429")


class LatencySpec(_Frozen):
    """A latency distribution in the fault engine's latency-fault terms."""

    dist: Literal["fixed", "uniform", "normal", "lognormal", "empirical"]
    ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    sd_ms: float | None = None
    median_ms: float | None = None
    sigma: float | None = None
    values_ms: list[float] | None = None


class Latency(_Frozen):
    smtp: LatencySpec | None = None
    api: LatencySpec | None = None


class WebhookPolicy(_Frozen):
    """How the real ESP posts events back and retries a failing URL (delays in real seconds)."""

    retry_schedule_s: list[float] = Field(description="delay before each retry, after a failed attempt")
    give_up_on: list[int] = Field(default_factory=list, description="statuses that stop retries at once")
    no_retry_events: list[str] = Field(default_factory=list, description="events never retried")
    batch_max: int = Field(1, ge=1, description="events per POST (SendGrid batches, others post one)")


class Profile(_Frozen):
    name: str
    title: str
    api: str | None = Field(description="the ESP whose HTTP API and webhook format this is; null: SMTP only")
    limits: Limits
    smtp: SmtpReplies
    http: HttpReplies
    latency: Latency
    webhook: WebhookPolicy | None = None
    sources: dict[str, str] = Field(min_length=1, description="source key -> URL or reference")
    login: str = Field("", description="how this ESP's clients log in (SMTP AUTH, API key)")
    notes: str = ""

    @field_validator("api")
    @classmethod
    def _api_exists(cls, v: str | None) -> str | None:
        if v is not None and not has_api(v):
            raise ValueError(f"no ESP home {v!r} with an api.py in {ESPS}")
        return v

    def _quota_faults(self) -> list[dict[str, Any]]:
        smtp = self.smtp.quota or self.smtp.throttle
        # The API's 429 says which limit it is: the quota's own words when the ESP has some.
        words = parse_reply(self.smtp.quota).text if self.smtp.quota else self.http.throttle.message
        http = f"{self.http.throttle.status} {words}"
        over = self.limits.over_quota
        out: list[dict[str, Any]] = []
        if self.limits.daily_quota is not None:
            out += _quota_pair("profile.quota.day", self.limits.daily_quota, "day", over, smtp, http)
        for w in self.limits.windows:
            out += _quota_pair(f"profile.quota.{w.window}", w.limit, w.window, over, smtp, http)
        return out

    def faults(self, *, rate: float | None = None) -> list[dict[str, Any]]:
        """The profile's limits and latency as fault specs (FaultSpec dicts), named ``profile.*``.

        ``rate`` overrides the profile's messages/s (``mailstorm esp --profile ses --rate 14``). The
        quotas (``daily_quota``, ``windows``) go with the profile's own rate: they are the limits of one
        account tier (SES's sandbox: 1/s and 200/day), so a ``rate`` of the user's own leaves them out.
        """
        out: list[dict[str, Any]] = []
        if self.latency.smtp is not None:
            out.append(
                {"name": "profile.latency.smtp", "type": "latency", "phase": "eod", **_lat(self.latency.smtp)}
            )
        if self.latency.api is not None:
            out.append(
                {"name": "profile.latency.api", "type": "latency", "phase": "http", **_lat(self.latency.api)}
            )
        rate = rate if rate is not None else self.limits.rate
        if rate is not None:
            # The profile's bucket depth if it publishes one, else a tenth of a second's worth: enough to
            # absorb arrival jitter (a depth of 1 throws away the refill that accrues while no request
            # waits, so the accepted rate falls below the limit) without a burst skewing the rate.
            burst = self.limits.burst or max(1, math.ceil(rate / 10))
            # SES answers throttling "after the DATA command" (the AWS blog cited in ses.yaml): the reply
            # to the final ".", which every client treats as a failed transaction (smtplib RSETs then).
            out.append(
                {
                    "name": "profile.throttle.smtp",
                    "type": "throttle",
                    "phase": "eod",
                    "rate": rate,
                    "burst": burst,
                    "key": "ip",
                    "reply": self.smtp.throttle,
                }
            )
            out.append(
                {
                    "name": "profile.throttle.http",
                    "type": "throttle",
                    "phase": "http",
                    "rate": rate,
                    "burst": burst,
                    "key": "api_key",
                    "reply": f"{self.http.throttle.status} {self.http.throttle.message}",
                }
            )
        if rate == self.limits.rate:
            out.extend(self._quota_faults())
        if self.limits.max_connections is not None:
            out.append(
                {
                    "name": "profile.concurrency",
                    "type": "concurrency",
                    "phase": "connect",
                    "max_sessions": self.limits.max_connections,
                    "reply": self.smtp.too_many_connections,
                }
            )
        if self.limits.messages_per_connection is not None:
            out.append(
                {
                    "name": "profile.message_cap",
                    "type": "message_cap",
                    "phase": "mail",
                    "max_messages": self.limits.messages_per_connection,
                    "reply": self.smtp.too_many_messages,
                }
            )
        return out


def _quota_pair(
    name: str, limit: int, window: str, over: str, smtp_reply: str, http_reply: str
) -> list[dict[str, Any]]:
    """One quota over SMTP (per client IP, after the data) and over HTTP (per API key)."""
    common = {"type": "quota", "limit": limit, "window": window, "over": over}
    return [
        {"name": f"{name}.smtp", **common, "phase": "eod", "key": "ip", "reply": smtp_reply},
        {"name": f"{name}.http", **common, "phase": "http", "key": "api_key", "reply": http_reply},
    ]


def _lat(spec: LatencySpec) -> dict[str, Any]:
    return spec.model_dump(exclude_none=True)


@cache
def load_profile(name: str) -> Profile:
    """Load ``fake_esp/esps/<name>/profile.yaml``; a bad name or file raises ConfigError naming it."""
    path = PROFILES.get(name)
    if path is None:
        raise ConfigError(PROFILES.unknown(name))
    return parse_profile(path.read_text(encoding="utf-8"), where=f"profile {name}")


def parse_profile(text: str, *, where: str = "profile") -> Profile:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from None
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where}: {loc}: {err['msg']}") from None


def list_profiles() -> list[Profile]:
    return [load_profile(n) for n in PROFILE_NAMES]
