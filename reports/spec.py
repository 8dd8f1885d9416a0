"""What a run is judged against (``SloSpec``) and which reports it gets (``ReportSpec``).

Both are parsed once at the edge (the scenario file, or ``slo.json`` in a run directory) into frozen
pydantic models; nothing downstream handles raw dicts. Every SLO is optional except ``max_lost``, which
defaults to 0: a load test that silently loses mail has failed whatever else it shows, and
``max_dropped``, which defaults to 1% of the planned arrivals: a load that did not happen tested nothing.

An SLO may also stop a run that can no longer meet it (fail fast, as k6's ``abortOnFail``): its limit
given as a mapping, ``p95_e2e_ms: {limit: 5000, abort: true, after: 30s}``, is parsed into the scalar
limit every report reads plus an ``AbortRule`` in ``SloSpec.aborts`` (the runner's live judge,
mailstorm.harness.abort, reads those). Only the objectives the live ledgers can judge take ``abort``
(``LIVE_SLOS``); ``after`` is the grace of those whose breach needs time to be hopeless
(``GRACED_SLOS``). Anything else is a ``FieldError`` naming the key: exit 2 before anything starts.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailstorm.durations import DURATION_SCHEMA, Duration, parse_duration
from mailstorm.errors import FieldError

_UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_TARGET_RE = re.compile(r"^\s*([\d_,]+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*$")

Format = Literal["html", "md", "json", "junit"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The objectives a run can be stopped on, and what ``after`` means for each: a count that only grows
# is hopeless the moment it is over its limit; the others need ``after`` seconds of breach.
LIVE_SLOS = ("max_lost", "max_duplicated", "max_bounced", "max_dropped", "p95_e2e_ms", "p99_e2e_ms")
LIVE_SLOS += ("min_throughput",)
GRACED_SLOS = {
    "max_lost": "how long a message the SUT took may be neither at the ESP, refused nor held",
    "p95_e2e_ms": "how long the live p95 may stay over the limit",
    "p99_e2e_ms": "how long the live p99 may stay over the limit",
    "min_throughput": "how long the load may go without a delivery",
}
NOT_LIVE = {
    "max_pending": "it counts what the SUT still holds at the drain's deadline",
    "max_recovery_s": "it is judged on each fault window's recovery, after the run",
    "max_time_to_alert_s": "it is judged per fault window on the alerts, after the run",
    "max_false_alerts": "it is judged against every fault window and its recovery, after the run",
    "max_missed_alerts": "it is judged per fault window on the alerts, after the run",
    "max_rpo_messages": "it is judged on each restore's messages, after the run",
    "max_rto_s": "it is judged on each restore's recovery, after the run",
    "max_analytics_error": "it is judged on the SUT's final analytics counts, after the run",
}
DEFAULT_AFTER_S = 30.0
_LIMIT_KEYS = ("limit", "abort", "after")


class AbortRule(_Frozen):
    """Stop the run as soon as its SLO is breached beyond recovery (judged live by the runner)."""

    after_s: float = Field(DEFAULT_AFTER_S, ge=0, description="grace: seconds the breach must last")


def _limit_schema(schema: dict[str, Any]) -> None:
    """Editors see both forms of an objective: its value, or ``{limit, abort, after}``."""
    meta_keys = ("default", "description", "title")
    for name, prop in schema.get("properties", {}).items():
        if name not in LIVE_SLOS and name not in NOT_LIVE:
            continue
        value = {k: v for k, v in prop.items() if k not in meta_keys}
        mapping = {
            "type": "object",
            "properties": {
                "limit": value,
                "abort": {
                    "type": "boolean",
                    "description": "stop the run once it is breached beyond recovery",
                },
                "after": {**DURATION_SCHEMA, "description": "the grace: seconds the breach must last"},
            },
            "required": ["limit"],
            "additionalProperties": False,
        }
        meta = {k: v for k, v in prop.items() if k in meta_keys}
        schema["properties"][name] = {**meta, "anyOf": [*value.get("anyOf", [value]), mapping]}


class SloSpec(_Frozen):
    """Service level objectives; ``None`` means "not judged" (the figure is still reported)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_limit_schema)

    max_lost: int = Field(0, ge=0, description="messages the SUT accepted that never reached the ESP")
    max_dropped: int | str = Field(
        "1%",
        description="arrivals the load generator planned and could not send: a count, or a percentage of "
        "the planned arrivals ('1%')",
    )
    max_duplicated: int | None = Field(None, ge=0, description="messages the ESP accepted more than once")
    max_bounced: int | None = Field(None, ge=0, description="messages the ESP refused permanently")
    max_pending: int | None = Field(None, ge=0, description="messages the SUT still held at the deadline")
    p95_e2e_ms: float | None = Field(None, gt=0, description="95th percentile intended-send -> ESP accept")
    p99_e2e_ms: float | None = Field(None, gt=0, description="99th percentile intended-send -> ESP accept")
    max_recovery_s: float | None = Field(None, ge=0, description="worst time to recover after a fault ends")
    max_rpo_messages: int | None = Field(
        None, ge=0, description="messages the worst restore from backup lost (accepted after its snapshot)"
    )
    max_rto_s: float | None = Field(
        None, ge=0, description="worst restore start -> first recovered second (s)"
    )
    min_throughput: float | None = Field(
        None, gt=0, description="delivered messages per second over the load phase (msg/s)"
    )
    # Campaigns (mailstorm.reports.campaign): judged whenever a campaign runs, per campaign.
    max_campaign_missing: int = Field(0, ge=0, description="subscribers a campaign never reached")
    max_campaign_duplicated: int = Field(0, ge=0, description="subscribers a campaign reached twice or more")
    max_suppressed_sent: int = Field(0, ge=0, description="unsubscribed recipients a campaign reached")
    max_campaign_duration_s: float | None = Field(
        None, gt=0, description="trigger to the last subscriber's first delivery (s)"
    )
    # Analytics (mailstorm.reports.analytics): the SUT's event counts against the webhooks the ESP posted.
    max_analytics_error: int | str | None = Field(
        None,
        description="events the SUT's analytics missed or double-counted, per event kind: a count (0), a "
        "share of the kind's events ('1%'), or both ('5, 1%': both must hold)",
    )
    # How recovery is judged: a second is "recovered" when its delivery rate is within
    # recovery_tolerance of the pre-fault baseline and its p95 latency is within the same tolerance
    # above the baseline p95; recovery is the first run of recovery_k such seconds after the fault ends.
    recovery_tolerance: float = Field(0.2, gt=0, lt=1, description="relative tolerance around the baseline")
    recovery_k: int = Field(3, ge=1, le=600, description="consecutive seconds within tolerance")
    # Alerts (a scenario's ``alerts:`` section; mailstorm.reports.alerts): judged per fault window.
    max_time_to_alert_s: float | None = Field(
        None, ge=0, description="worst fault start -> first alert firing for it (a missed fault fails it)"
    )
    max_false_alerts: int | None = Field(
        None, ge=0, description="alerts that fired outside every fault window and its recovery"
    )
    max_missed_alerts: int | None = Field(None, ge=0, description="fault windows no alert fired for")

    aborts: dict[str, AbortRule] = Field(
        default_factory=dict,
        description="the SLOs that stop the run when breached beyond recovery (from their mapping form, "
        "e.g. p95_e2e_ms: {limit: 5000, abort: true, after: 30s})",
    )

    @model_validator(mode="before")
    @classmethod
    def _limit_mappings(cls, data: Any) -> Any:
        """``name: {limit, abort, after}`` -> ``name: limit`` plus ``aborts[name]`` (errors name the key)."""
        if not isinstance(data, dict):
            return data
        data, aborts = dict(data), dict(data.get("aborts") or {})
        for name, value in list(data.items()):
            if not isinstance(value, dict) or name == "aborts":
                continue
            if name not in LIVE_SLOS and name not in NOT_LIVE:
                raise FieldError(("slo", name), f"{name} takes a value, not a mapping")
            data[name], rule = _parse_limit(name, value)
            if rule is not None:
                aborts[name] = rule
        for name in aborts:
            if name not in LIVE_SLOS:
                why = NOT_LIVE.get(name, "it is not an SLO")
                raise FieldError(("slo", "aborts", name), f"{name} cannot stop a run: {why}")
        data["aborts"] = aborts
        return data

    @field_validator("max_dropped")
    @classmethod
    def _count_or_percent(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"max_dropped {value} is negative")
            return value
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            share = float(text[:-1]) if text.endswith("%") else math.nan
        except ValueError:
            share = math.nan
        if not 0 <= share <= 100:  # NaN too
            raise ValueError(
                f"max_dropped {value!r} is not a count (e.g. 0) or a share of the planned arrivals (e.g. 1%)"
            )
        return f"{share:g}%"

    @field_validator("max_analytics_error")
    @classmethod
    def _count_and_or_share(cls, value: int | str | None) -> int | str | None:
        if value is None or (isinstance(value, int) and value >= 0):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        counts = [p for p in parts if p.isdigit()]
        shares = [p for p in parts if p.endswith("%") and _share(p) is not None]
        if (
            isinstance(value, int)
            or len(counts) > 1
            or len(shares) > 1
            or len(counts) + len(shares) != len(parts)
        ):
            raise ValueError(
                f"max_analytics_error {value!r} is not a count (0), a share of the events ('1%') "
                "or both ('5, 1%')"
            )
        return (
            int(counts[0])
            if counts and not shares
            else ", ".join([*counts, *(f"{_share(s):g}%" for s in shares)])
        )

    def analytics_limits(self) -> tuple[int | None, float | None]:
        """``max_analytics_error`` as (events, share of the events as a fraction); None for a part not set."""
        value = self.max_analytics_error
        if value is None or isinstance(value, int):
            return value, None
        count = share = None
        for part in value.split(","):
            part = part.strip()
            if part.endswith("%"):
                share = float(part[:-1]) / 100
            else:
                count = int(part)
        return count, share

    def dropped_limit(self, planned: int) -> float:
        """``max_dropped`` in messages for a run that planned ``planned`` arrivals."""
        if isinstance(self.max_dropped, int):
            return float(self.max_dropped)
        return planned * float(self.max_dropped[:-1]) / 100


def _share(text: str) -> float | None:
    """``"1.5%"`` -> 1.5; None when it is not a percentage from 0 to 100."""
    try:
        share = float(text[:-1])
    except ValueError:
        return None
    return share if 0 <= share <= 100 else None


def _parse_limit(name: str, value: dict[str, Any]) -> tuple[Any, AbortRule | None]:
    """One SLO's mapping form: its limit, and its abort rule when ``abort: true``."""
    for key in value:
        if key not in _LIMIT_KEYS:
            raise FieldError(
                ("slo", name, key), f"unknown key {key!r} (a limit's keys: {', '.join(_LIMIT_KEYS)})"
            )
    if "limit" not in value:
        raise FieldError(("slo", name), f"{name} as a mapping needs its limit: {{limit: ..., abort: true}}")
    abort = value.get("abort", False)
    if not isinstance(abort, bool):
        raise FieldError(("slo", name, "abort"), f"abort is true or false, got {abort!r}")
    if abort and name in NOT_LIVE:
        msg = f"{name} cannot be judged while the run goes ({NOT_LIVE[name]}): it cannot abort a run"
        raise FieldError(("slo", name, "abort"), msg)
    if "after" in value:
        if not abort:
            raise FieldError(("slo", name, "after"), "after is the grace of an abort: set abort: true too")
        if name not in GRACED_SLOS:
            msg = f"{name} only grows: it stops the run as soon as it is over its limit, there is no after"
            raise FieldError(("slo", name, "after"), msg)
        try:
            after = float(parse_duration(value["after"]))
        except (TypeError, ValueError) as exc:
            raise FieldError(("slo", name, "after"), str(exc) or "not a duration") from None
        if not after >= 0:
            raise FieldError(("slo", name, "after"), f"after must be >= 0, got {value['after']!r}")
        return value["limit"], AbortRule(after_s=after)
    return value["limit"], AbortRule() if abort else None


class SizingSpec(_Frozen):
    """A volume target for the sizing report: ``"1000000/1h"`` with ``headroom`` (0.3 or ``"30%"``)."""

    target: str = Field(description="messages per period, e.g. '1000000/1h', '50000/15min', '200/s'")
    headroom: float = Field(0.3, ge=0, lt=10, description="spare capacity on top of the target (0.3 = 30%)")
    esp_rate: float | None = Field(
        None, gt=0, description="ESP sending-rate limit (msg/s), overriding the ESP profile's limits"
    )
    esp_profile: str | None = Field(
        None,
        description="size against this ESP profile's limits (mailstorm esp --list-profiles), not the run's",
    )
    compare: bool = Field(
        False, description="also weigh the target against every ESP profile side by side (ESP selection)"
    )

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        parse_target(value)
        return value

    @field_validator("esp_profile")
    @classmethod
    def _known_profile(cls, value: str | None) -> str | None:
        from mailstorm.fake_esp.profiles import (
            PROFILE_NAMES,  # checked here so a scenario file fails at parse time
        )

        if value is not None and value not in PROFILE_NAMES:
            raise ValueError(f"unknown ESP profile {value!r}; known: {', '.join(PROFILE_NAMES)}")
        return value

    @field_validator("headroom", mode="before")
    @classmethod
    def _percent(cls, value: object) -> object:
        return parse_headroom(value) if isinstance(value, str) else value

    @property
    def messages(self) -> int:
        return parse_target(self.target)[0]

    @property
    def period_s(self) -> float:
        return parse_target(self.target)[1]


class ReportSpec(_Frozen):
    """Which report files a run writes, and an optional sizing target."""

    formats: tuple[Format, ...] = Field(("html", "md", "json", "junit"), min_length=1)
    sizing: SizingSpec | None = None
    every: Duration | None = Field(
        None,
        gt=0,
        description="rebuild report.html and report.json (marked partial) this often while the run goes; "
        "unset: every 5 minutes on runs over 15 minutes, never on shorter ones",
    )


class AlertMatchSpec(_Frozen):
    """How alerts are matched to fault windows (the judging half of a scenario's ``alerts:`` section)."""

    map: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="alert name -> the chaos steps (names) it is meant to catch; a window no alert is "
        "mapped to is caught by any alert",
    )
    grace: Duration = Field(
        5.0, ge=0, description="after a window's recovery, how long a new firing is still put down to it"
    )


def parse_target(text: str) -> tuple[int, float]:
    """``"1000000/1h"`` -> (1000000, 3600.0). Raises ValueError naming what is wrong."""
    m = _TARGET_RE.match(text.lower())
    if not m:
        raise ValueError(f"target {text!r} is not MESSAGES/PERIOD (e.g. 1000000/1h)")
    count_s, amount_s, unit = m.groups()
    if unit not in _UNITS_S:
        raise ValueError(f"target {text!r}: unknown period unit {unit!r} (use s, min, h or d)")
    count = int(count_s.replace("_", "").replace(",", ""))
    period = float(amount_s or 1) * _UNITS_S[unit]
    if count <= 0 or period <= 0:
        raise ValueError(f"target {text!r}: messages and period must be positive")
    return count, period


def parse_headroom(value: str) -> float:
    """``"30%"`` -> 0.3; ``"0.3"`` -> 0.3."""
    text = value.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"headroom {value!r} is not a fraction or a percentage (e.g. 30%)") from None
