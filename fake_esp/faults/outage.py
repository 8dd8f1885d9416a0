"""outage: while active, the ESP is down. Mode refuse: the server closes its listener (connection
refused) and cuts in-flight sessions (the engine answers disconnect for any step still arriving); mode
hang: connections are accepted and never answered. The server asks ``Engine.outage()`` for the listener
state; this fault answers the steps.

Spec: duration_s, mode refuse | hang; phase: every SMTP phase."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from mailstorm.fake_esp.faults.base import (
    DISCONNECT,
    HANG,
    SMTP_PHASES,
    Action,
    Context,
    FaultBase,
    FaultSpecBase,
    Phase,
    register,
)


class OutageFault(FaultSpecBase):
    type: Literal["outage"]
    # An outage is a state of the whole listener, not of one step; the phase only says where in-flight
    # sessions are caught in hang mode, so every SMTP phase by default.
    phase: Phase | tuple[Phase, ...] = SMTP_PHASES  # type: ignore[assignment]
    duration_s: float = Field(gt=0)
    mode: Literal["refuse", "hang"] = "refuse"


@register
class Outage(FaultBase):
    spec_model = OutageFault

    def __init__(self, spec: OutageFault) -> None:
        super().__init__(spec)
        self.mode = spec.mode

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(HANG if self.mode == "hang" else DISCONNECT)
