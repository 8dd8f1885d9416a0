"""message_cap: once a connection has sent ``max_messages`` messages, refuse the next (421 at MAIL)."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, register


@register("message_cap")
class MessageCap:
    def __init__(self, spec: Any) -> None:
        self.max_messages = spec.max_messages
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        if ctx.messages >= self.max_messages:
            return Action(REPLY, reply=self.reply)
        return None
