"""latency: wait before answering, the wait drawn from a fixed, uniform, normal, lognormal or empirical
distribution with the engine's seeded RNG (so the same seed gives the same waits).

Spec: dist fixed{ms} | uniform{min_ms,max_ms} | normal{mean_ms,sd_ms} | lognormal{median_ms,sigma} |
empirical{values_ms}; phase required.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from mailstorm.fake_esp.faults.base import DELAY, Action, Context, FaultBase, FaultSpecBase, register


class LatencyFault(FaultSpecBase):
    type: Literal["latency"]
    dist: Literal["fixed", "uniform", "normal", "lognormal", "empirical"] = "fixed"
    ms: float | None = Field(default=None, ge=0)
    min_ms: float | None = Field(default=None, ge=0)
    max_ms: float | None = Field(default=None, ge=0)
    mean_ms: float | None = Field(default=None, ge=0)
    sd_ms: float | None = Field(default=None, ge=0)
    median_ms: float | None = Field(default=None, gt=0)
    sigma: float | None = Field(default=None, ge=0)
    values_ms: tuple[Annotated[float, Field(ge=0)], ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _dist_fields(self) -> LatencyFault:
        needed = {
            "fixed": ("ms",),
            "uniform": ("min_ms", "max_ms"),
            "normal": ("mean_ms", "sd_ms"),
            "lognormal": ("median_ms", "sigma"),
            "empirical": ("values_ms",),
        }[self.dist]
        for field in needed:
            if getattr(self, field) is None:
                raise ValueError(f"{field}: required for dist {self.dist}")
        if self.dist == "uniform" and self.min_ms > self.max_ms:  # type: ignore[operator]
            raise ValueError("min_ms: must not exceed max_ms")
        return self


@register
class Latency(FaultBase):
    spec_model = LatencyFault
    spec: LatencyFault

    def sample_ms(self, rng: random.Random) -> float:
        s = self.spec
        if s.dist == "fixed":
            return s.ms  # type: ignore[return-value]
        if s.dist == "uniform":
            return rng.uniform(s.min_ms, s.max_ms)  # type: ignore[arg-type]
        if s.dist == "normal":
            return max(0.0, rng.gauss(s.mean_ms, s.sd_ms))  # type: ignore[arg-type]
        if s.dist == "lognormal":
            # median = exp(mu) for a lognormal: parameterised by what people quote, the median.
            return rng.lognormvariate(math.log(s.median_ms), s.sigma)  # type: ignore[arg-type]
        return rng.choice(s.values_ms)  # type: ignore[arg-type]

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(DELAY, delay_s=self.sample_ms(rng) / 1000.0)
