"""quota: at most ``limit`` messages per key in each window of time (a second, a minute, an hour, a day,
or any number of seconds); past it, the configured reply until the next window (SES's daily quota:
"454 Throttling failure: Daily message quota exceeded", after DATA) -- or, with ``over: queue``, the
message is accepted into the ESP's backlog and delivered when the next window begins (Mandrill past its
hourly quota answers "queued"; an esp.delivered record marks the delivery).

Windows are fixed and aligned to the clock (a day is a UTC day; a minute starts at :00), as Klaviyo
publishes its burst (1 s) and steady (1 min) windows: two quota faults on one key make such a pair. A
throttle (token bucket) is the other kind of limit; a quota counts, it does not refill. Over HTTP the
reply is a 429 with the ESP's rate-limit headers (``limits_rate``). With N worker processes the count is
the ESP's (``shared_state``).

Spec: limit, window (second | minute | hour | day | seconds > 0), key ip | sender_domain | auth_user |
api_key, reply, over refuse | queue; phase eod."""

from __future__ import annotations

import random
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mailstorm.fake_esp.faults.base import (
    QUEUE,
    REPLY,
    Action,
    Context,
    FaultBase,
    Phase,
    WithReply,
    check_holds,
    register,
)
from mailstorm.fake_esp.faults.throttle import throttle_key
from mailstorm.replies import SES_DAILY_QUOTA

WINDOWS_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


class QuotaFault(WithReply):
    type: Literal["quota"]
    phase: Phase | tuple[Phase, ...] = "eod"
    limit: int = Field(ge=1)
    window: Literal["second", "minute", "hour", "day"] | Annotated[float, Field(gt=0)] = "day"
    key: Literal["ip", "sender_domain", "auth_user", "api_key"] = "ip"
    reply: str = str(SES_DAILY_QUOTA)
    over: Literal["refuse", "queue"] = "refuse"

    @model_validator(mode="after")
    def _queue_holds_messages(self) -> QuotaFault:
        if self.over == "queue":
            check_holds(self)
        return self

    @property
    def window_s(self) -> float:
        return WINDOWS_S[self.window] if isinstance(self.window, str) else float(self.window)


def window_of(now: float, window_s: float) -> int:
    """The index of the fixed window ``now`` falls in (windows start at multiples of their length)."""
    return int(now // window_s)


@register
class Quota(FaultBase):
    spec_model = QuotaFault
    spec: QuotaFault
    limits_rate = True
    shared_state = True

    def __init__(self, spec: QuotaFault) -> None:
        super().__init__(spec)
        self.reply = spec.parsed_reply
        self.window_s = spec.window_s

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        key = throttle_key(self.spec.key, ctx)
        window = window_of(now, self.window_s)
        seen, used = state.get(key, (window, 0))
        if seen != window:
            used = 0
        if used < self.spec.limit:
            state[key] = (window, used + 1)
            return None
        state[key] = (window, used)
        if self.spec.over == "queue":
            return Action(QUEUE, hold_s=(window + 1) * self.window_s - now)
        return Action(REPLY, reply=self.reply)
