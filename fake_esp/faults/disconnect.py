"""disconnect: close the connection without a reply. At eod the server keeps the message first (the
client never learns it was accepted: the classic duplicate maker). Spec: no fields; phase required."""

from __future__ import annotations

import random
from typing import Any, Literal

from mailstorm.fake_esp.faults.base import DISCONNECT, Action, Context, FaultBase, FaultSpecBase, register


class DisconnectFault(FaultSpecBase):
    type: Literal["disconnect"]


@register
class Disconnect(FaultBase):
    spec_model = DisconnectFault

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(DISCONNECT)
