"""outage: while active, the ESP is down. Mode refuse: the server closes its listener (connection
refused) and cuts in-flight sessions (the engine answers disconnect for any step still arriving); mode
hang: connections are accepted and never answered. The server asks ``Engine.outage()`` for the listener
state; this fault answers the steps."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import DISCONNECT, HANG, Action, Context, register


@register("outage")
class Outage:
    def __init__(self, spec: Any) -> None:
        self.mode = spec.mode

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(HANG if self.mode == "hang" else DISCONNECT)
