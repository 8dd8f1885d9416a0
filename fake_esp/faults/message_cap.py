"""message_cap: once a connection has sent ``max_messages`` messages, refuse the next (421 at MAIL).

Spec: max_messages, reply (421 4.7.0 Too many messages on this connection, reconnect); phase mail."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from mailstorm.fake_esp.faults.base import REPLY, Action, Context, FaultBase, Phase, WithReply, register
from mailstorm.replies import TOO_MANY_MESSAGES


class MessageCapFault(WithReply):
    type: Literal["message_cap"]
    phase: Phase | tuple[Phase, ...] = "mail"
    max_messages: int = Field(ge=0)
    reply: str = str(TOO_MANY_MESSAGES)


@register
class MessageCap(FaultBase):
    spec_model = MessageCapFault
    limits_rate = True

    def __init__(self, spec: MessageCapFault) -> None:
        super().__init__(spec)
        self.max_messages = spec.max_messages
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None:
        if ctx.messages >= self.max_messages:
            return Action(REPLY, reply=self.reply)
        return None
