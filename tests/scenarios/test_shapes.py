"""Load shapes: pure rate functions, and the arrival schedule every load process shares out."""

from __future__ import annotations

import collections
import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from mailstorm.scenarios.shapes import Shape, arrival_times, expected_count, iter_arrivals, share
from tests.strategies import open_shapes

SHAPE = TypeAdapter(Shape)


def shape(**kw):
    return SHAPE.validate_python(kw)


def test_each_shape_gives_its_rate_over_time():
    """Each shape's rate at chosen moments is what its definition says."""
    assert shape(kind="steady", rate=200).rate_at(7, 60) == 200
    ramp = shape(kind="ramp", from_rate=10, to_rate=110)
    assert [ramp.rate_at(t, 100) for t in (0, 50, 100, 200)] == [10, 60, 110, 110]
    step = shape(kind="step", start_rate=100, step_rate=50, step_s=10, steps=3)
    assert [step.rate_at(t, 60) for t in (0, 9.99, 10, 25, 35, 59)] == [100, 100, 150, 200, 200, 200]
    spike = shape(kind="spike", base_rate=50, factor=10, at_s=30, for_s=5)
    assert [spike.rate_at(t, 60) for t in (29.9, 30, 34.9, 35)] == [50, 500, 500, 50]
    soak = shape(kind="soak", rate=100, warmup_s=10)
    assert [soak.rate_at(t, 3600) for t in (0, 5, 10, 3000)] == [0, 50, 100, 100]
    camp = shape(kind="campaign", burst_rate=1000, burst_s=10, tail_rate=100, decay_s=0)
    assert [camp.rate_at(t, 60) for t in (0, 9.9, 10, 50)] == [1000, 1000, 100, 100]
    decaying = shape(kind="campaign", burst_rate=1000, burst_s=10, tail_rate=100, decay_s=5)
    assert decaying.rate_at(15, 60) == pytest.approx(100 + 900 / 2.718281828, rel=1e-6)
    assert 100 < decaying.rate_at(40, 60) < decaying.rate_at(20, 60) < 1000


def test_bad_shapes_are_refused_naming_the_field():
    """A negative rate, an unknown kind or an extra field is refused, naming what is wrong."""
    with pytest.raises(ValidationError, match="rate"):
        shape(kind="steady", rate=-1)
    with pytest.raises(ValidationError, match="kind"):
        shape(kind="tsunami", rate=1)
    with pytest.raises(ValidationError, match="burst"):
        shape(kind="spike", base_rate=1, factor=2, at_s=1, for_s=1, burst=3)


def test_uniform_steady_arrivals_are_exactly_the_rate_each_second():
    """Uniform arrivals at a steady 200/s put exactly 200 in every second, all within the run."""
    times = arrival_times(shape(kind="steady", rate=200), 20)
    assert len(times) == 4000
    assert set(collections.Counter(int(t) for t in times).values()) == {200}
    assert times == sorted(times) and times[0] >= 0 and times[-1] < 20


def test_spike_arrivals_follow_the_spike():
    """A spike's arrivals per second are the base rate, then factor times it, then the base again."""
    times = arrival_times(shape(kind="spike", base_rate=50, factor=4, at_s=3, for_s=3), 9)
    per_s = collections.Counter(int(t) for t in times)
    assert [per_s[s] for s in range(9)] == [50, 50, 50, 200, 200, 200, 50, 50, 50]


def test_poisson_arrivals_are_seeded_and_have_the_mean_rate():
    """Poisson arrivals are the same for the same seed, differ for another, and average the rate."""
    s = shape(kind="steady", rate=100)
    a = arrival_times(s, 60, poisson=True, seed=1)
    assert a == arrival_times(s, 60, poisson=True, seed=1)
    assert a != arrival_times(s, 60, poisson=True, seed=2)
    assert abs(len(a) - 6000) < 4 * 6000**0.5  # within 4 sigma of the Poisson mean


@settings(max_examples=60, deadline=None)
@given(open_shapes, st.floats(1, 20))
def test_uniform_arrival_count_matches_the_integral_of_the_rate(spec, duration):
    """For any shape, the uniform schedule offers the integral of its rate, to within one message."""
    s = shape(**spec)
    times = arrival_times(s, duration)
    assert abs(len(times) - expected_count(s, duration)) <= 1
    assert all(0 <= t < duration for t in times)
    assert times == sorted(times)


@given(st.integers(0, 10_000), st.integers(1, 16))
def test_shares_add_up_and_differ_by_at_most_one(total, processes):
    """Splitting connections or users between load processes loses none and is as even as can be."""
    parts = [share(total, i, processes) for i in range(processes)]
    assert sum(parts) == total
    assert max(parts) - min(parts) <= 1


def test_the_schedule_is_generated_lazily():
    """A day-long soak at 1,000/s (86 million arrivals) yields its first ones at once: the schedule is
    generated as it is taken, and a load process's stride takes every n-th."""
    t = time.perf_counter()
    taken = list(itertools.islice(iter_arrivals(shape(kind="soak", rate=1000), 86_400), 3, 9, 2))
    assert taken == pytest.approx([0.0035, 0.0055, 0.0075])
    assert time.perf_counter() - t < 1.0  # microseconds of work; a materialised list would take minutes
