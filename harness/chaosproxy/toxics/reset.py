"""Connection reset: the first chunk that flows ``timeout_ms`` or later after the connection opened
aborts both sides with a TCP RST (the client sees ECONNRESET), like Toxiproxy's reset_peer."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from mailstorm.harness.chaosproxy.base import Link, Send, Stream, ToxicBase, ToxicSpecBase, register


class ResetSpec(ToxicSpecBase):
    type: Literal["reset"] = "reset"
    stream: Stream = "both"
    timeout_ms: float = Field(0.0, ge=0)


@register
class Reset(ToxicBase):
    spec_model = ResetSpec
    spec: ResetSpec

    async def pipe(self, data: bytes, arrived: float, link: Link, send: Send) -> None:
        if (asyncio.get_running_loop().time() - link.opened) * 1000.0 >= self.spec.timeout_ms:
            link.acted(self, "reset")
            link.reset()
            return
        await send(data)
