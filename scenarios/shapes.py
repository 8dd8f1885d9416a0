"""Load shapes: how many messages per second the open model offers at each moment of a run.

Each shape is a frozen pydantic model (one ``kind`` each, so a scenario file picks one by name) with a
pure ``rate_at(t, duration_s)`` in messages per second. ``iter_arrivals`` turns any shape into the exact,
deterministic list of intended send times that the load processes share out between themselves. The
closed model (users that send, wait, send again) is a shape of its own with no rate: its load depends on
the SUT's speed, which is what makes it hide overload (coordinated omission), so it is opt-in.

This module must stay free of gevent/locust imports: the runner and the reports import it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, PositiveInt


class _Shape(BaseModel):
    # No NaN or infinity: a rate of 1e999 is no schedule a load can keep.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Steady(_Shape):
    """A constant arrival rate."""

    kind: Literal["steady"] = "steady"
    rate: PositiveFloat

    def rate_at(self, t: float, duration_s: float) -> float:
        return self.rate


class Ramp(_Shape):
    """A linear ramp from ``from_rate`` at t=0 to ``to_rate`` at the end of the run."""

    kind: Literal["ramp"] = "ramp"
    from_rate: NonNegativeFloat
    to_rate: NonNegativeFloat

    def rate_at(self, t: float, duration_s: float) -> float:
        frac = min(max(t / duration_s, 0.0), 1.0) if duration_s > 0 else 1.0
        return self.from_rate + (self.to_rate - self.from_rate) * frac


class Step(_Shape):
    """A staircase for capacity tests: ``steps`` levels of ``step_s`` seconds each, the first at
    ``start_rate``, each next one ``step_rate`` higher; the last level holds until the end."""

    kind: Literal["step"] = "step"
    start_rate: NonNegativeFloat
    step_rate: float
    step_s: PositiveFloat
    steps: PositiveInt

    def rate_at(self, t: float, duration_s: float) -> float:
        level = min(int(max(t, 0.0) // self.step_s), self.steps - 1)
        return max(self.start_rate + self.step_rate * level, 0.0)


class Spike(_Shape):
    """A baseline, then ``factor`` times the baseline from ``at_s`` for ``for_s`` seconds, then back."""

    kind: Literal["spike"] = "spike"
    base_rate: NonNegativeFloat
    factor: PositiveFloat
    at_s: NonNegativeFloat
    for_s: PositiveFloat

    def rate_at(self, t: float, duration_s: float) -> float:
        if self.at_s <= t < self.at_s + self.for_s:
            return self.base_rate * self.factor
        return self.base_rate


class Soak(_Shape):
    """A long constant rate, reached by a linear warm-up of ``warmup_s`` seconds (0: at once)."""

    kind: Literal["soak"] = "soak"
    rate: PositiveFloat
    warmup_s: NonNegativeFloat = 0.0

    def rate_at(self, t: float, duration_s: float) -> float:
        if self.warmup_s > 0 and t < self.warmup_s:
            return self.rate * max(t, 0.0) / self.warmup_s
        return self.rate


class Campaign(_Shape):
    """A newsletter blast: ``burst_rate`` for ``burst_s`` seconds, then a tail that decays towards
    ``tail_rate`` with time constant ``decay_s`` (0: drops to the tail at once)."""

    kind: Literal["campaign"] = "campaign"
    burst_rate: PositiveFloat
    burst_s: PositiveFloat
    tail_rate: NonNegativeFloat
    decay_s: NonNegativeFloat = 0.0

    def rate_at(self, t: float, duration_s: float) -> float:
        if t < self.burst_s:
            return self.burst_rate
        if self.decay_s == 0:
            return self.tail_rate
        decay = math.exp(-(t - self.burst_s) / self.decay_s)
        return self.tail_rate + (self.burst_rate - self.tail_rate) * decay


class Closed(_Shape):
    """The closed model: ``users`` senders, each sending one message, then waiting ``wait_s``, again and
    again. Offered load follows the SUT's speed; kept for comparison with tools that work this way."""

    kind: Literal["closed"] = "closed"
    users: PositiveInt
    wait_s: NonNegativeFloat = 0.0


OpenShape = Steady | Ramp | Step | Spike | Soak | Campaign
Shape = Annotated[OpenShape | Closed, Field(discriminator="kind")]

# Integration step for turning a rate into arrival times: fine enough that a spike edge lands within
# 10 ms, coarse enough that a day-long soak costs under ten million cheap iterations.
_DT = 0.01


def iter_arrivals(
    shape: OpenShape, duration_s: float, *, poisson: bool = False, seed: int = 0
) -> Iterator[float]:
    """Every intended send time (seconds from the start, ascending, all < duration_s) for ``shape``,
    generated as needed, so a day-long soak costs no memory for its schedule.

    Uniform arrivals put the n-th message where the integral of the rate reaches n - 0.5 (so a steady
    200/s gives exactly 200 per second). Poisson arrivals draw exponential gaps in "integrated rate"
    space from a seeded RNG (time-rescaling), so the same seed gives the same times.
    """
    rng = random.Random(seed)
    next_at = rng.expovariate(1.0) if poisson else 0.5
    acc = 0.0
    t = 0.0
    while t < duration_s:
        step = min(_DT, duration_s - t)
        r = shape.rate_at(t + step / 2, duration_s)
        acc_end = acc + r * step
        while next_at <= acc_end:
            # Linear within the step: place the arrival where the running integral crosses next_at.
            at = t + (next_at - acc) / r
            if at >= duration_s:  # float rounding on the run's last step: outside the run
                return
            yield at
            next_at += rng.expovariate(1.0) if poisson else 1.0
        acc = acc_end
        t += step


def arrival_times(
    shape: OpenShape, duration_s: float, *, poisson: bool = False, seed: int = 0
) -> list[float]:
    """The whole schedule of ``iter_arrivals`` as a list (for analysis and tests)."""
    return list(iter_arrivals(shape, duration_s, poisson=poisson, seed=seed))


def expected_count(shape: OpenShape, duration_s: float, until_s: float | None = None) -> float:
    """The integral of the rate from 0 to ``until_s`` (default: the whole run): messages offered."""
    end = duration_s if until_s is None else min(max(until_s, 0.0), duration_s)
    total = 0.0
    t = 0.0
    while t < end:
        step = min(_DT, end - t)
        total += shape.rate_at(t + step / 2, duration_s) * step
        t += step
    return total


def share(total: int, index: int, processes: int) -> int:
    """Process ``index``'s part of ``total`` when split as evenly as possible between ``processes``."""
    return total // processes + (1 if index < total % processes else 0)
