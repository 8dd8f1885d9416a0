"""Bandwidth limit: bytes leave no faster than ``rate_kbps`` KB/s (1 KB = 1000 bytes)."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field

from mailstorm.harness.chaosproxy.base import Link, Send, ToxicBase, ToxicSpecBase, register, sleep_until


class BandwidthSpec(ToxicSpecBase):
    type: Literal["bandwidth"] = "bandwidth"
    rate_kbps: float = Field(gt=0)


@register
class Bandwidth(ToxicBase):
    spec_model = BandwidthSpec
    spec: BandwidthSpec

    async def pipe(self, data: bytes, arrived: float, link: Link, send: Send) -> None:
        rate = self.spec.rate_kbps * 1000.0  # bytes/s
        # Pieces of ~50 ms worth of bytes, so a big chunk trickles out instead of leaving in one burst.
        piece = max(1, int(rate / 20))
        key = f"{self.name}.free_at"
        loop = asyncio.get_running_loop()
        for i in range(0, len(data), piece):
            part = data[i : i + piece]
            free_at = max(loop.time(), link.state.get(key, 0.0)) + len(part) / rate
            link.state[key] = free_at
            link.acted(self, "throttle")
            await sleep_until(free_at)
            await send(part)
