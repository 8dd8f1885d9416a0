"""outage: while active, the ESP is down: SMTP, the HTTP APIs and the webhook poster together, unless
``on`` narrows it. Mode refuse: each listener closes (connection refused) and cuts in-flight sessions and
requests (the engine answers disconnect for any step still arriving); mode hang: connections are
accepted and never answered; webhook POSTs are held. Each listener asks ``Engine.outage(surface)`` for
its state; this fault answers the steps.

Spec: duration_s, mode refuse | hang, on (smtp, http, webhooks; default all three; the control API always
stays up); phase: by default every phase of the listeners in ``on``."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field, field_validator

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

# The parts of the ESP an outage takes down (the control API is never one: the harness must reach it).
Surface = Literal["smtp", "http", "webhooks"]
OUTAGE_SURFACES: tuple[str, ...] = ("smtp", "http", "webhooks")


class OutageFault(FaultSpecBase):
    type: Literal["outage"]
    # An outage is a state of the whole ESP, not of one step: ``on`` says which parts are down (all by
    # default). The phase only says where in-flight sessions and requests are caught, so by default
    # every phase of the listeners in ``on``.
    phase: Phase | tuple[Phase, ...] | None = None  # type: ignore[assignment]
    on: tuple[Surface, ...] = Field(default=OUTAGE_SURFACES, min_length=1)  # type: ignore[assignment]
    duration_s: float = Field(gt=0)
    mode: Literal["refuse", "hang"] = "refuse"

    @field_validator("match", "count", "attempts")
    @classmethod
    def _not_aimed(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError("an outage takes the whole ESP down: it cannot be aimed or counted")
        return v

    @property
    def phases(self) -> frozenset[str]:
        if self.phase is not None:
            return super().phases
        smtp = SMTP_PHASES if "smtp" in self.on else ()
        return frozenset(smtp + (("http",) if "http" in self.on else ()))


@register
class Outage(FaultBase):
    spec_model = OutageFault

    def __init__(self, spec: OutageFault) -> None:
        super().__init__(spec)
        self.mode = spec.mode

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(HANG if self.mode == "hang" else DISCONNECT)
