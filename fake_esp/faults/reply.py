"""reply: answer the step with a configured 4yz/5yz reply instead of the normal one (a 421 also closes
the connection). Spec: reply "451 4.3.0 text"; phase required."""

from __future__ import annotations

import random
from typing import Any, Literal

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, FaultBase, WithReply, register


class ReplyFault(WithReply):
    type: Literal["reply"]


@register
class FixedReply(FaultBase):
    spec_model = ReplyFault

    def __init__(self, spec: ReplyFault) -> None:
        super().__init__(spec)
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(REPLY, reply=self.reply)
