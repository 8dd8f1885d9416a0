"""throttle: a token bucket per key (client IP, MAIL FROM domain, AUTH user or API key); a step that
finds the bucket empty gets the configured reply (SES: 454 after DATA)."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, register


def throttle_key(kind: str, ctx: Context) -> str:
    if kind == "ip":
        return ctx.peer
    if kind == "sender_domain":
        return (ctx.mail_from or "").rpartition("@")[2].lower()
    if kind == "auth_user":
        return ctx.auth_user or ""
    return ctx.api_key or ""


@register("throttle")
class Throttle:
    def __init__(self, spec: Any) -> None:
        self.spec = spec
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
