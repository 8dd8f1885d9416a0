"""concurrency: past ``max_sessions`` open sessions of the ESP (all its workers), refuse (421 at the
banner); at phase http, past ``max_sessions`` requests in flight (a 429 in the ESP's shape).

Spec: max_sessions, reply (421 4.7.0 Too many concurrent SMTP connections); phase connect."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, FaultBase, Phase, WithReply, register
from mailstorm.replies import TOO_MANY_CONNECTIONS


class ConcurrencyFault(WithReply):
    type: Literal["concurrency"]
    phase: Phase | tuple[Phase, ...] = "connect"
    max_sessions: int = Field(ge=0)
    reply: str = str(TOO_MANY_CONNECTIONS)


@register
class Concurrency(FaultBase):
    spec_model = ConcurrencyFault
    limits_rate = True

    def __init__(self, spec: ConcurrencyFault) -> None:
        super().__init__(spec)
        self.max_sessions = spec.max_sessions
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        if ctx.open_sessions > self.max_sessions:
            return Action(REPLY, reply=self.reply)
        return None
