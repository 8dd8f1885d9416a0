"""What a run is judged against (``SloSpec``) and which reports it gets (``ReportSpec``).

Both are parsed once at the edge (the scenario file, or ``slo.json`` in a run directory) into frozen
pydantic models; nothing downstream handles raw dicts. Every SLO is optional except ``max_lost``, which
defaults to 0: a load test that silently loses mail has failed whatever else it shows, and
``max_dropped``, which defaults to 1% of the planned arrivals: a load that did not happen tested nothing.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailstorm.durations import Duration

_UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_TARGET_RE = re.compile(r"^\s*([\d_,]+)\s*/\s*(\d*(?:\.\d+)?)\s*([a-z]+)\s*$")

Format = Literal["html", "md", "json", "junit"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SloSpec(_Frozen):
    """Service level objectives; ``None`` means "not judged" (the figure is still reported)."""

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
    min_throughput: float | None = Field(
        None, gt=0, description="delivered messages per second over the load phase (msg/s)"
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

    def dropped_limit(self, planned: int) -> float:
        """``max_dropped`` in messages for a run that planned ``planned`` arrivals."""
        if isinstance(self.max_dropped, int):
            return float(self.max_dropped)
        return planned * float(self.max_dropped[:-1]) / 100


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
