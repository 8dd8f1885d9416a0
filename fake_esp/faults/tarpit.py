"""tarpit: write the answer (the configured reply, or the normal one) one byte at a time."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import TARPIT, Action, Context, register


@register("tarpit")
class Tarpit:
    def __init__(self, spec: Any) -> None:
        self.byte_delay_s = spec.byte_delay_ms / 1000.0
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(TARPIT, reply=self.reply, byte_delay_s=self.byte_delay_s)
