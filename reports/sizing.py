"""Sizing: how many SUT instances, and which ESP sending rate, a target volume needs.

Inputs, each named in the result: the per-instance capacity measured by the run (the maximum sustainable
throughput of a step/ramp run, divided by the number of SUT endpoints the load was spread over; failing
that the throughput actually delivered during the load phase, which is only a lower bound because the
run never saturated the SUT), the ESP's limits (``run.json``'s ``esp_limits``, the ESP profile's
``limits`` section: ``rate`` msg/s, ``daily_quota``; or an explicit ``esp_rate``), the retry
amplification the run measured (ESP attempts per message), and a target (``1000000/1h``) with headroom.
The arithmetic is returned line by line so a reader can check it.

With several ESPs (``run.json``'s ``esps_limits``) the verdict above is the first ESP's (the SUT's primary
relay), and each ESP is then listed against the whole target too (``esps``: after a failover one ESP
carries everything), with their rates summed (``esps_rate_sum``: what the ESPs carry together, were the
SUT to spread its mail over them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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
    # Each ESP of a run with several, against the whole target ({name, rate, ok, daily_quota, daily_ok}),
    # and their rates summed (None: one of them has no published rate).
    esps: list[dict[str, Any]] | None = None
    esps_rate_sum: float | None = None

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
    esps_limits: Mapping[str, EspLimits | None] | None = None,
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
    esps, esps_sum = (None, None)
    if esps_limits and spec.esp_rate is None:  # an --esp-rate replaces the ESPs' limits: nothing to list
        esps, esps_sum = _every_esp(esps_limits, required, spec.messages, lines, assumptions)
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
        esps=esps,
        esps_rate_sum=esps_sum,
    )


def _every_esp(
    limits: Mapping[str, EspLimits | None],
    required: float,
    messages: int,
    lines: list[str],
    assumptions: list[str],
) -> tuple[list[dict[str, Any]], float | None]:
    """Each ESP against the whole target (a failover leaves one ESP with all of it), and the rates summed;
    the arithmetic lines appended."""
    rows = []
    for name, lim in limits.items():
        rate = lim.rate if lim is not None else None
        daily = int(lim.daily_quota) if lim is not None and lim.daily_quota else None
        ok = None if not rate else rate >= required
        daily_ok = None if daily is None else daily >= messages
        rows.append({"name": name, "rate": rate, "ok": ok, "daily_quota": daily, "daily_ok": daily_ok})
        if rate:
            verdict = "enough" if ok else "too small"
            lines.append(f"ESP {name}: {rate:,.2f} msg/s vs {required:,.2f} msg/s needed alone: {verdict}")
        else:
            lines.append(f"ESP {name}: no rate limit known (no profile or rate): it decides nothing")
        if daily is not None:
            enough = "ok" if daily_ok else "short"
            lines.append(f"ESP {name}: daily quota {daily:,} vs {messages:,}: {enough}")
    rates = [r["rate"] for r in rows]
    total = None
    if all(rates):
        total = round(sum(rates), 3)
        sum_text = " + ".join(f"{r:,.2f}" for r in rates)
        verdict = "enough" if total >= required else "too small"
        lines.append(f"all {len(rows)} ESPs together = {sum_text} = {total:,.2f} msg/s: {verdict}")
    assumptions.append(
        "with several ESPs the SUT sends through the first; after a failover one ESP carries the whole"
        " target, so each is weighed alone; their sum holds only if the SUT spreads its mail over them"
    )
    return rows, total


def _esp_limit(spec: SizingSpec, esp_limits: EspLimits | None) -> tuple[float | None, str | None]:
    if spec.esp_rate is not None:
        return spec.esp_rate, "--esp-rate"
    if esp_limits is not None and esp_limits.rate:
        where = esp_limits.source or "the run's ESP profile (run.json esp_limits)"
        return esp_limits.rate, f"{where}, limits.rate"
    return None, None


def campaign_sizing(
    recipients: int, campaign: dict[str, Any], esp_limits: EspLimits | None, esp_rate: float | None = None
) -> dict[str, Any]:
    """How long a campaign to ``recipients`` subscribers would take: at the rate the run's campaign
    (``campaign``, as report.json has it) measured, and within the ESP's rate and its hourly and daily
    quotas (``esp_rate`` overrides the limits' rate). The arithmetic line by line, as ``size``'s."""
    measured = campaign["times"]["rate_per_s"]
    limit = esp_rate if esp_rate is not None else (esp_limits.rate if esp_limits is not None else None)
    daily = esp_limits.daily_quota if esp_limits is not None else None
    lines = []
    at_measured = recipients / measured if measured else None
    if measured:
        reached = campaign["recipients"] - campaign["unsubscribed"]
        lines.append(
            f"measured: campaign {campaign['id']} reached {reached:,} subscribers at {measured:,.2f}/s -> "
            f"{recipients:,} take {recipients:,} / {measured:,.2f} = {at_measured:,.0f} s"
        )
    else:
        lines.append(f"measured: campaign {campaign['id']} delivered nothing: no rate to size from")
    at_limit = recipients / limit if limit else None
    if limit:
        hourly = f"hourly {limit * 3600:,.0f}"
        lines.append(f"ESP rate {limit:,.2f}/s ({hourly}): {recipients:,} / {limit:,.2f} = {at_limit:,.0f} s")
    days = math.ceil(recipients / daily) if daily else None
    if daily:
        lines.append(f"ESP daily quota {daily:,}: {recipients:,} / {daily:,} -> {days} day(s) of quota")
    known = [x for x in (at_measured, at_limit) if x is not None]
    seconds = max(known) if known else None
    if seconds is not None:
        bound = "the ESP's rate" if at_limit is not None and at_limit >= (at_measured or 0) else "the SUT"
        lines.append(f"the send takes {seconds:,.0f} s ({seconds / 3600:,.2f} h), bound by {bound}")
    if days is not None and days > 1:
        lines.append(f"over the daily quota: the list needs {days} days, or a larger quota")
    return {
        "recipients": recipients,
        "campaign": campaign["id"],
        "measured_rate": measured,
        "seconds_at_measured": at_measured,
        "esp_rate_limit": limit,
        "seconds_at_esp_rate": at_limit,
        "daily_quota": daily,
        "days_of_quota": days,
        "seconds": seconds,
        "arithmetic": lines,
    }
