"""Slicer: every chunk leaves as small pieces (``average_size`` +/- ``size_variation`` bytes), with
``delay_us`` between them, which exercises a peer's reassembly of partial SMTP lines."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import Field, model_validator

from mailstorm.harness.chaosproxy.base import Link, Send, ToxicBase, ToxicSpecBase, register


class SlicerSpec(ToxicSpecBase):
    type: Literal["slicer"] = "slicer"
    average_size: int = Field(8, ge=1)
    size_variation: int = Field(0, ge=0)
    delay_us: int = Field(1000, ge=0)

    @model_validator(mode="after")
    def _variation_below_size(self) -> SlicerSpec:
        if self.size_variation >= self.average_size:
            raise ValueError("size_variation must be smaller than average_size")
        return self


@register
class Slicer(ToxicBase):
    spec_model = SlicerSpec
    spec: SlicerSpec

    async def pipe(self, data: bytes, arrived: float, link: Link, send: Send) -> None:
        if len(data) > self.spec.average_size - self.spec.size_variation:
            link.acted(self, "slice")
        i = 0
        while i < len(data):
            if i:
                await asyncio.sleep(self.spec.delay_us / 1e6)
            var = self.spec.size_variation
            size = self.spec.average_size + (link.rng.randint(-var, var) if var else 0)
            await send(data[i : i + size])
            i += size
