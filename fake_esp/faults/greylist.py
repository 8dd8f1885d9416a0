"""greylist: a client/sender/recipient triplet seen for the first time is refused (451 4.7.1) until it
comes back at least ``retry_after_s`` later; then it passes from then on.

Spec: retry_after_s, reply (451 4.7.1 Greylisted, please try again later); phase rcpt."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, FaultBase, Phase, WithReply, register
from mailstorm.replies import GREYLISTED


class GreylistFault(WithReply):
    type: Literal["greylist"]
    phase: Phase | tuple[Phase, ...] = "rcpt"
    retry_after_s: float = Field(ge=0)
    reply: str = str(GREYLISTED)


@register
class Greylist(FaultBase):
    spec_model = GreylistFault
    shared_state = True

    def __init__(self, spec: GreylistFault) -> None:
        super().__init__(spec)
        self.retry_after_s = spec.retry_after_s
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        triplet = (ctx.peer, (ctx.mail_from or "").lower(), (ctx.rcpt or "").lower())
        first = state.get(triplet)
        if first is None:
            state[triplet] = now
            return Action(REPLY, reply=self.reply)
        if now - first < self.retry_after_s:
            return Action(REPLY, reply=self.reply)
        return None
