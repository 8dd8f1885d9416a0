"""Latency with jitter: every chunk leaves ``ms`` (+/- ``jitter_ms``, uniform) after it arrived.

A delay line, not a per-chunk pause: the delay counts from the chunk's arrival, so throughput is kept and
only the transit time grows. Jittered deadlines never reorder bytes (a TCP stream cannot).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mailstorm.harness.chaosproxy.base import Link, Send, ToxicBase, ToxicSpecBase, register, sleep_until


class LatencySpec(ToxicSpecBase):
    type: Literal["latency"] = "latency"
    ms: float = Field(ge=0, le=600_000)
    jitter_ms: float = Field(0.0, ge=0)


@register
class Latency(ToxicBase):
    spec_model = LatencySpec
    spec: LatencySpec

    async def pipe(self, data: bytes, arrived: float, link: Link, send: Send) -> None:
        delay = self.spec.ms
        if self.spec.jitter_ms:
            delay += link.rng.uniform(-self.spec.jitter_ms, self.spec.jitter_ms)
        key = f"{self.name}.last"
        deadline = max(arrived + max(delay, 0.0) / 1000.0, link.state.get(key, 0.0))
        link.state[key] = deadline
        if deadline > arrived:
            link.acted(self, "delay")
        await sleep_until(deadline)
        await send(data)
