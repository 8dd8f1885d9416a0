"""reply: answer the step with a configured 4yz/5yz reply instead of the normal one."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, register


@register("reply")
class ReplyFault:
    def __init__(self, spec: Any) -> None:
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(REPLY, reply=self.reply)
