"""disconnect: close the connection without a reply. At eod the server keeps the message first (the
client never learns it was accepted: the classic duplicate maker)."""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import DISCONNECT, Action, Context, register


@register("disconnect")
class Disconnect:
    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(DISCONNECT)
