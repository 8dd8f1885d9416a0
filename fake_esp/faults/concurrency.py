"""concurrency: past ``max_sessions`` open sessions on this worker, refuse (421 at the banner)."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, register


@register("concurrency")
class Concurrency:
    def __init__(self, spec: Any) -> None:
        self.max_sessions = spec.max_sessions
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        if ctx.open_sessions > self.max_sessions:
            return Action(REPLY, reply=self.reply)
        return None
