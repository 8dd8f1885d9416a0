"""latency: wait before answering, the wait drawn from a fixed, uniform, normal, lognormal or empirical
distribution with the engine's seeded RNG (so the same seed gives the same waits)."""

from __future__ import annotations

import math
import random
from typing import Any

from mailstorm.fake_esp.faults.base import DELAY, Action, Context, register


@register("latency")
class Latency:
    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def sample_ms(self, rng: random.Random) -> float:
        s = self.spec
        if s.dist == "fixed":
            return s.ms
        if s.dist == "uniform":
            return rng.uniform(s.min_ms, s.max_ms)
        if s.dist == "normal":
            return max(0.0, rng.gauss(s.mean_ms, s.sd_ms))
        if s.dist == "lognormal":
            # median = exp(mu) for a lognormal: parameterised by what people quote, the median.
            return rng.lognormvariate(math.log(s.median_ms), s.sigma)
        return rng.choice(s.values_ms)

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return Action(DELAY, delay_s=self.sample_ms(rng) / 1000.0)
