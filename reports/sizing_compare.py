"""The ESP-selection table: one sizing target against every ESP profile side by side.

For each profile (``mailstorm.fake_esp.profiles``: the ESPs, the platform rate-limit fakes and the
sizing-only marketing profiles) it says whether its published rate carries the rate the target needs
(with headroom, as ``sizing.size`` does for one ESP), whether its daily quota carries the target's
volume, and how long the target takes on it: the volume at the profile's rate, in whole days of its
quota when the quota is the tighter bound. A limit a service does not publish is null and decides
nothing ("unknown", never a pass): the row's ``carries`` is then null unless a published limit already
fails it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class ProfileFit:
    profile: str
    title: str
    api: str | None  # the fake ESP API serving it; null for a sizing-only profile
    rate: float | None  # msg/s the profile publishes
    rate_ok: bool | None
    daily_quota: int | None
    daily_ok: bool | None
    carries: bool | None  # both published limits carry the target; null: not decided by them
    send_s: float | None  # seconds to send the target's volume within the published limits

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def send_time(messages: int, rate: float | None, daily_quota: int | None) -> float | None:
    """Seconds to send ``messages`` at ``rate`` msg/s with at most ``daily_quota`` per 24 h; None when
    neither limit is published (the pipeline's own speed decides)."""
    if rate is None and daily_quota is None:
        return None
    if daily_quota is None or messages <= daily_quota:
        return messages / rate if rate else None
    full_days = math.ceil(messages / daily_quota) - 1  # days spent on whole quotas before the last one
    rest = messages - full_days * daily_quota
    return full_days * DAY_S + (rest / rate if rate else 0.0)


def fit(name: str, messages: int, required_rate: float) -> ProfileFit:
    from mailstorm.fake_esp.profiles import load_profile  # only when asked: reports need no ESP otherwise

    profile = load_profile(name)
    rate, daily = profile.limits.rate, profile.limits.daily_quota
    rate_ok = None if rate is None else rate >= required_rate
    daily_ok = None if daily is None else daily >= messages
    if rate_ok is False or daily_ok is False:
        carries: bool | None = False
    elif rate_ok is True and daily_ok is not False:
        carries = True
    else:
        carries = None
    send = send_time(messages, rate, daily)
    return ProfileFit(
        profile=name,
        title=profile.title,
        api=profile.api,
        rate=rate,
        rate_ok=rate_ok,
        daily_quota=daily,
        daily_ok=daily_ok,
        carries=carries,
        send_s=None if send is None else round(send, 1),
    )


def compare_profiles(messages: int, required_rate: float) -> list[dict[str, Any]]:
    """Every profile's fit for the target, those that carry it first, then by time to send it."""
    from mailstorm.fake_esp.profiles import PROFILE_NAMES

    fits = [fit(name, messages, required_rate) for name in PROFILE_NAMES]
    order = {True: 0, None: 1, False: 2}
    fits.sort(key=lambda f: (order[f.carries], f.send_s if f.send_s is not None else math.inf, f.profile))
    return [f.as_dict() for f in fits]


def duration(seconds: float) -> str:
    """``42 s``, ``13.9 min``, ``2.5 h``, ``3.1 d``: the unit that keeps a time for the target short."""
    for unit, size in (("d", DAY_S), ("h", 3_600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:,.0f} s"
