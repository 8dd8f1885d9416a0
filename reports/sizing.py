"""Sizing: how many SUT instances, and which ESP sending rate, a target volume needs.

Inputs, each named in the result: the per-instance capacity measured by the run (the maximum sustainable
throughput of a step/ramp run, divided by the number of SUT endpoints the load was spread over; failing
that the throughput actually delivered during the load phase, which is only a lower bound because the
run never saturated the SUT), the ESP's limits (``run.json``'s ``esp_limits``, the ESP profile's
``limits`` section: ``rate`` msg/s, ``daily_quota``; or an explicit ``esp_rate``), the retry
amplification the run measured (ESP attempts per message), and a target (``1000000/1h``) with headroom.
The arithmetic is returned line by line so a reader can check it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from mailstorm.reports.sizing_compare import compare_profiles
from mailstorm.reports.spec import SizingSpec
from mailstorm.runinfo import EspLimits


@dataclass
class Sizing:
    target: str
    messages: int
    period_s: float
    headroom: float
    target_rate: float
    required_rate: float
    per_instance_rate: float | None
    per_instance_source: str
    endpoints: int
    instances: int | None
    esp_rate_needed: float
    esp_attempt_rate: float
    amplification: float
    esp_rate_limit: float | None
    esp_limit_source: str | None
    esp_ok: bool | None
    daily_quota: int | None
    daily_ok: bool | None
    arithmetic: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)
    # The target against every ESP profile (reports.sizing_compare), when the spec asks for it.
    compare: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def size(
    spec: SizingSpec,
    *,
    max_sustainable: float | None,
    observed_rate: float | None,
    endpoints: int,
    amplification: float,
    esp_limits: EspLimits | None,
    esp_refusals: int = 0,
) -> Sizing:
    target_rate = spec.messages / spec.period_s
    required = target_rate * (1 + spec.headroom)
    endpoints = max(int(endpoints or 1), 1)
    lines = [
        f"target rate = {spec.messages:,} msg / {spec.period_s:,.0f} s = {target_rate:,.2f} msg/s",
        f"with {spec.headroom:.0%} headroom = {target_rate:,.2f} x {1 + spec.headroom:.2f}"
        f" = {required:,.2f} msg/s",
    ]
    assumptions = [
        "the target volume arrives evenly over its period (a burst needs the burst's own rate)",
        "each SUT instance performs like the one(s) measured, and instances scale linearly",
    ]
    if max_sustainable:
        total, source = max_sustainable, "maximum sustainable throughput of the capacity run"
    elif observed_rate:
        total, source = observed_rate, "throughput delivered during the load (a lower bound: not saturated)"
        assumptions.append("the run did not find the SUT's limit, so the instance count is an upper bound")
    else:
        total, source = None, "no delivered throughput measured"
    if esp_refusals:
        assumptions.append(
            f"the ESP refused {esp_refusals:,} attempts with 4xx during the run: the measured rate may be"
            " the ESP's limit rather than the SUT's"
        )
    per_instance = total / endpoints if total else None
    instances = None
    if per_instance:
        lines.append(
            f"per instance = {total:,.2f} msg/s / {endpoints} endpoint(s) = {per_instance:,.2f} msg/s"
        )
        instances = max(math.ceil(required / per_instance), 1)
        lines.append(f"instances = ceil({required:,.2f} / {per_instance:,.2f}) = {instances}")
    attempt_rate = required * amplification
    lines.append(
        f"ESP attempts = {required:,.2f} msg/s x {amplification:.3f} attempts/msg = {attempt_rate:,.2f}/s"
    )
    limit, limit_source = _esp_limit(spec, esp_limits)
    esp_ok = None
    if limit is not None:
        esp_ok = limit >= required
        verdict = "enough" if esp_ok else "too small"
        lines.append(f"ESP limit {limit:,.2f} msg/s vs {required:,.2f} msg/s needed: {verdict}")
        if not esp_ok:
            lines.append(f"at {limit:,.2f} msg/s the target takes {spec.messages / limit:,.0f} s")
    daily = esp_limits.daily_quota if esp_limits is not None else None
    daily_ok = None
    if daily:
        daily_ok = int(daily) >= spec.messages
        lines.append(
            f"ESP daily quota {int(daily):,} vs {spec.messages:,} in the target:"
            f" {'ok' if daily_ok else 'short'}"
        )
        assumptions.append("the target volume is sent once per 24 h (daily quota)")
    assumptions.append("the ESP's rate limit counts accepted messages; throttled attempts also cost time")
    return Sizing(
        target=spec.target,
        messages=spec.messages,
        period_s=spec.period_s,
        headroom=spec.headroom,
        target_rate=round(target_rate, 3),
        required_rate=round(required, 3),
        per_instance_rate=None if per_instance is None else round(per_instance, 3),
        per_instance_source=source,
        endpoints=endpoints,
        instances=instances,
        esp_rate_needed=round(required, 3),
        esp_attempt_rate=round(attempt_rate, 3),
        amplification=round(amplification, 4),
        esp_rate_limit=limit,
        esp_limit_source=limit_source,
        esp_ok=esp_ok,
        daily_quota=int(daily) if daily else None,
        daily_ok=daily_ok,
        arithmetic=lines,
        assumptions=assumptions,
        compare=compare_profiles(spec.messages, required) if spec.compare else None,
    )


def _esp_limit(spec: SizingSpec, esp_limits: EspLimits | None) -> tuple[float | None, str | None]:
    if spec.esp_rate is not None:
        return spec.esp_rate, "--esp-rate"
    if esp_limits is not None and esp_limits.rate:
        where = esp_limits.source or "the run's ESP profile (run.json esp_limits)"
        return esp_limits.rate, f"{where}, limits.rate"
    return None, None
