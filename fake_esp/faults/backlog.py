"""backlog: the ESP accepts the message now and delivers it ``delay_s`` later (SES's DeliveryDelay: a
message accepted, then held by the ESP before it goes out). The client sees the normal success; the
ledger has the esp.accepted now and an esp.delivered when the delay is over, and the reports' end-to-end
latency runs to the delivery.

Spec: delay_s; phase eod (or http)."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field, model_validator

from mailstorm.fake_esp.faults.base import (
    QUEUE,
    Action,
    Context,
    FaultBase,
    FaultSpecBase,
    Phase,
    check_holds,
    register,
)


class BacklogFault(FaultSpecBase):
    type: Literal["backlog"]
    phase: Phase | tuple[Phase, ...] = "eod"
    delay_s: float = Field(gt=0, le=86400)

    @model_validator(mode="after")
    def _holds_messages(self) -> BacklogFault:
        check_holds(self)
        return self


@register
class Backlog(FaultBase):
    spec_model = BacklogFault
    spec: BacklogFault

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(QUEUE, hold_s=self.spec.delay_s)
