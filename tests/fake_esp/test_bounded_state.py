"""The fake ESP's per-key fault state stays bounded over a long run (one process: ``LocalMap``, at most
``SLOTS`` keys, the least recently written forgotten first; N workers: the shared table, same bound)."""

from __future__ import annotations

import random

from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.faults.base import REPLY, Context
from mailstorm.fake_esp.shared import SLOTS, LocalMap


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_a_local_map_holds_at_most_its_limit_and_forgets_the_least_recently_written():
    m = LocalMap(limit=3)
    for k in "abc":
        m[k] = 1
    m["a"] = 2  # written again: now the most recent
    m["d"] = 1
    assert list(m) == ["c", "a", "d"] and len(m) == 3
    assert m.get("b") is None and m["a"] == 2
    assert LocalMap().limit == SLOTS


def _engine_with(fault: dict) -> tuple[Engine, Clock]:
    clock = Clock()
    engine = Engine(1, clock=clock)
    engine.add(fault)
    return engine, clock


def _state(engine: Engine) -> LocalMap:
    (entry,) = engine._entries.values()
    assert isinstance(entry.state, LocalMap) and isinstance(entry.scope, LocalMap)
    return entry


def test_greylist_triplets_are_bounded_and_a_forgotten_one_is_greylisted_again():
    engine, clock = _engine_with({"type": "greylist", "retry_after_s": 1})
    entry = _state(engine)
    entry.state.limit = 100
    first = Context(session="s0", peer="10.0.0.1", mail_from="a@x.test", rcpt="r0@y.test")
    assert engine.decide("rcpt", first).kind == REPLY  # new: greylisted
    clock.now += 2
    assert engine.decide("rcpt", first).kind != REPLY  # came back after retry_after_s: passes
    for i in range(1, 200):  # a day's worth of distinct triplets, in small
        engine.decide(
            "rcpt", Context(session=f"s{i}", peer="10.0.0.1", mail_from="a@x.test", rcpt=f"r{i}@y.test")
        )
    assert len(entry.state) == 100
    clock.now += 2
    assert engine.decide("rcpt", first).kind == REPLY  # forgotten: new again, as a real greylist's expiry


def test_attempts_per_message_are_bounded_and_a_forgotten_message_counts_from_one():
    engine, _ = _engine_with({"type": "reply", "phase": "eod", "reply": "451 4.3.0 again", "attempts": [1]})
    entry = _state(engine)
    entry.scope.limit = 50
    ctx = Context(session="s", peer="10.0.0.1")
    ctx.msg_id = "m0"
    assert engine.decide("eod", ctx).kind == REPLY  # first attempt: refused
    assert engine.decide("eod", ctx).kind != REPLY  # second: passes
    for i in range(1, 100):
        ctx.msg_id = f"m{i}"
        engine.decide("eod", ctx)
    assert len(entry.scope) == 50
    ctx.msg_id = "m0"
    assert engine.decide("eod", ctx).kind == REPLY  # forgotten: its next try is a first attempt again


def test_quota_keys_are_bounded():
    engine, _ = _engine_with({"type": "quota", "limit": 1, "window": "minute", "key": "sender_domain"})
    entry = _state(engine)
    entry.state.limit = 10
    rng = random.Random(3)
    for i in range(500):
        ctx = Context(session=f"s{i}", peer="10.0.0.1", mail_from=f"u@d{rng.randrange(10**6)}.test")
        engine.decide("eod", ctx)
    assert len(entry.state) == 10
