"""throttle: a token bucket per key (client IP, MAIL FROM domain, AUTH user or API key); a step that
finds the bucket empty gets the configured reply (SES: 454 after DATA).

Spec: rate (per s), burst (1), key ip | sender_domain | auth_user | api_key, reply; phase eod."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, FaultBase, Phase, WithReply, register
from mailstorm.replies import SES_THROTTLED


class ThrottleFault(WithReply):
    type: Literal["throttle"]
    phase: Phase | tuple[Phase, ...] = "eod"
    rate: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)
    key: Literal["ip", "sender_domain", "auth_user", "api_key"] = "ip"
    reply: str = str(SES_THROTTLED)


def throttle_key(kind: str, ctx: Context) -> str:
    if kind == "ip":
        return ctx.peer
    if kind == "sender_domain":
        return (ctx.mail_from or "").rpartition("@")[2].lower()
    if kind == "auth_user":
        return ctx.auth_user or ""
    return ctx.api_key or ""


@register
class Throttle(FaultBase):
    spec_model = ThrottleFault
    shared_state = True
    spec: ThrottleFault
    limits_rate = True

    def __init__(self, spec: ThrottleFault) -> None:
        super().__init__(spec)
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        key = throttle_key(self.spec.key, ctx)
        tokens, last = state.get(key, (float(self.spec.burst), now))
        tokens = min(float(self.spec.burst), tokens + max(0.0, now - last) * self.spec.rate)
        if tokens >= 1.0:
            state[key] = (tokens - 1.0, now)
            return None
        state[key] = (tokens, now)
        return Action(REPLY, reply=self.reply)
