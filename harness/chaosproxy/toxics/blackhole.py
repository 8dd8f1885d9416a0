"""Blackhole: the connection is accepted, nothing is forwarded; the peer waits until its own timeout.

``close_after_s`` (optional) closes the connection quietly that long after the first swallowed chunk
(Toxiproxy's ``timeout`` toxic); by default it stays open until the client gives up.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from mailstorm.harness.chaosproxy.base import Link, Send, Stream, ToxicBase, ToxicSpecBase, register


class BlackholeSpec(ToxicSpecBase):
    type: Literal["blackhole"] = "blackhole"
    stream: Stream = "both"
    close_after_s: float | None = Field(None, gt=0)


@register
class Blackhole(ToxicBase):
    spec_model = BlackholeSpec
    spec: BlackholeSpec

    async def pipe(self, data: bytes, arrived: float, link: Link, send: Send) -> None:
        link.acted(self, "blackhole")
        key = f"{self.name}.closer"
        if self.spec.close_after_s is not None and key not in link.state:
            link.state[key] = asyncio.get_running_loop().call_later(self.spec.close_after_s, link.close)
        # The chunk is swallowed: never sent on.
