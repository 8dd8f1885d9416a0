"""tarpit: write the answer (the configured reply, or the normal one) one byte at a time.

Spec: byte_delay_ms, reply (optional: the normal answer when absent); phase required."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field, field_validator

from mailstorm.fake_esp.faults.base import (
    TARPIT,
    Action,
    Context,
    FaultBase,
    FaultSpecBase,
    check_reply,
    register,
)
from mailstorm.replies import Reply, parse_reply


class TarpitFault(FaultSpecBase):
    type: Literal["tarpit"]
    byte_delay_ms: float = Field(gt=0, le=10_000)
    reply: str | None = None

    @field_validator("reply")
    @classmethod
    def _reply_ok(cls, v: str | None) -> str | None:
        return None if v is None else check_reply(v)

    @property
    def parsed_reply(self) -> Reply | None:
        return parse_reply(self.reply) if self.reply is not None else None


@register
class Tarpit(FaultBase):
    spec_model = TarpitFault

    def __init__(self, spec: TarpitFault) -> None:
        super().__init__(spec)
        self.byte_delay_s = spec.byte_delay_ms / 1000.0
        self.reply = spec.parsed_reply

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(TARPIT, reply=self.reply, byte_delay_s=self.byte_delay_s)
