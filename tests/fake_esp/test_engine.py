"""The fault engine on its own: determinism, probability, TTL and after, state per key, replace and reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.faults.base import PASS_ACTION, Context
from tests.strategies import SMTP_PHASES, smtp_fault_mixes


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def run_transactions(seed: int, faults: list[dict], n: int = 1000) -> list[tuple]:
    """Drive ``n`` SMTP transactions (a fixed, seeded sequence of clients) through a fresh engine."""
    clock = Clock()
    engine = Engine(seed, clock=clock)
    for f in faults:
        engine.add(f)
    traffic = random.Random(12345)  # the input sequence: the same for every engine
    decisions = []
    open_sessions = 0
    for i in range(n):
        ctx = Context(session=f"s{i}", peer=f"10.0.0.{traffic.randrange(3)}", messages=traffic.randrange(4))
        open_sessions = max(1, open_sessions + traffic.choice((-1, 0, 1)))
        ctx.open_sessions = open_sessions
        for phase in SMTP_PHASES:
            if phase == "mail":
                ctx.mail_from = f"u@d{traffic.randrange(3)}.test"
            if phase == "rcpt":
                ctx.rcpt = f"r{traffic.randrange(5)}@x.test"
            clock.now += traffic.random() * 0.05
            act = engine.decide(phase, ctx)
            decisions.append((i, phase, act.kind, round(act.delay_s, 9), act.fault, str(act.reply)))
            if act.kind in ("reply", "disconnect", "hang"):
                break
    return decisions


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), faults=smtp_fault_mixes)
def test_same_seed_same_decisions_over_1000_transactions(seed, faults):
    """Two engines with the same seed and faults give identical decisions over 1,000 transactions."""
    assert run_transactions(seed, faults) == run_transactions(seed, faults)


def test_different_seeds_differ_when_probability_matters():
    """The decisions really come from the seeded RNG: another seed changes a 50 % fault's choices."""
    faults = [{"type": "reply", "phase": "rcpt", "reply": "451 4.3.0 x", "probability": 0.5}]
    a, b = run_transactions(1, faults, 200), run_transactions(2, faults, 200)
    assert a != b


def test_probability_is_respected():
    """A fault with probability 0.3 acts on about 30 % of the steps it sees."""
    engine = Engine(3)
    engine.add({"type": "reply", "phase": "mail", "reply": "451 4.3.0 x", "probability": 0.3})
    hits = sum(engine.decide("mail", Context()).kind == "reply" for _ in range(10_000))
    assert 2700 < hits < 3300


def test_ttl_and_after_windows():
    """A fault with after=5, ttl=2 is inactive for 5 s, active for 2 s, then removed."""
    clock = Clock()
    engine = Engine(0, clock=clock)
    fid = engine.add({"type": "reply", "phase": "mail", "reply": "451 4.3.0 x", "after": 5, "ttl": 2})
    assert engine.decide("mail", Context()) is PASS_ACTION
    clock.now += 5.0
    assert engine.decide("mail", Context()).fault == fid
    clock.now += 1.99
    assert engine.decide("mail", Context()).kind == "reply"
    clock.now += 0.02
    assert engine.decide("mail", Context()) is PASS_ACTION
    assert engine.entries() == []


def test_latencies_add_up_and_first_refusal_wins():
    """Latency faults add their delays; the first fault answering anything else decides the step."""
    engine = Engine(0)
    engine.add({"type": "latency", "phase": "rcpt", "ms": 10})
    engine.add({"type": "latency", "phase": "rcpt", "ms": 20})
    engine.add({"type": "reply", "phase": "rcpt", "reply": "451 4.3.0 first", "name": "first"})
    engine.add({"type": "reply", "phase": "rcpt", "reply": "550 5.1.1 second"})
    act = engine.decide("rcpt", Context())
    assert act.kind == "reply" and act.fault == "first" and act.delay_s == pytest.approx(0.03)
    assert [f.action for f in act.fired] == ["delay", "delay", "reply"]


def test_throttle_state_is_per_key_and_refills():
    """A throttle's bucket is per key, refills at its rate, and reset forgets it."""
    clock = Clock()
    engine = Engine(0, clock=clock)
    spec = {"type": "throttle", "phase": "mail", "rate": 2, "burst": 1, "key": "ip", "name": "t"}
    engine.add(spec)
    a, b = Context(peer="1.1.1.1"), Context(peer="2.2.2.2")
    assert engine.decide("mail", a) is PASS_ACTION
    assert engine.decide("mail", a).kind == "reply"
    assert engine.decide("mail", b) is PASS_ACTION
    clock.now += 0.5
    assert engine.decide("mail", a) is PASS_ACTION
    engine.put("t", spec)  # replace: fresh state
    assert engine.decide("mail", a) is PASS_ACTION
    engine.reset()
    assert engine.decide("mail", a) is PASS_ACTION and engine.entries() == []


def test_load_keeps_state_of_unchanged_faults():
    """A worker mirroring the store keeps a fault's state when another fault is added."""
    store, worker = Engine(0), Engine(0)
    store.add({"type": "throttle", "phase": "mail", "rate": 0.001, "burst": 1, "name": "t"})
    worker.load(store.snapshot())
    assert worker.decide("mail", Context(peer="p")) is PASS_ACTION
    store.add({"type": "latency", "phase": "ehlo", "ms": 1})
    worker.load(store.snapshot())
    assert worker.decide("mail", Context(peer="p")).kind == "reply"
    assert [e["id"] for e in worker.entries()] == [e["id"] for e in store.entries()]


def test_outage_window():
    """An outage is reported while in force and removes itself after duration_s."""
    clock = Clock()
    engine = Engine(0, clock=clock)
    engine.add({"type": "outage", "duration_s": 3, "mode": "hang", "after": 1})
    assert engine.outage() is None
    clock.now += 1
    assert engine.outage().mode == "hang"
    assert engine.decide("rcpt", Context()).kind == "hang"
    clock.now += 3
    assert engine.outage() is None and engine.entries() == []


def test_an_outage_takes_every_part_down_unless_on_narrows_it():
    """By default an outage is in force for SMTP, HTTP and the webhooks, and hangs SMTP steps and HTTP
    requests alike; ``on: [smtp]`` leaves the HTTP APIs and the webhooks alone."""
    engine = Engine(0, clock=Clock())
    engine.add({"type": "outage", "duration_s": 3, "mode": "hang", "name": "all"})
    assert {s: engine.outage(s).fault for s in ("smtp", "http", "webhooks")} == dict.fromkeys(
        ("smtp", "http", "webhooks"), "all"
    )
    assert engine.decide("http", Context()).kind == engine.decide("eod", Context()).kind == "hang"
    engine.reset()
    engine.add({"type": "outage", "duration_s": 3, "mode": "hang", "on": ["smtp"]})
    assert engine.outage("smtp") is not None and engine.outage("http") is engine.outage("webhooks") is None
    assert engine.decide("http", Context()) is PASS_ACTION and engine.decide("mail", Context()).kind == "hang"
