"""The reference pipeline's failover rule (harness/reference/failover.py): the next relay after N
consecutive failed attempts through the active one, a 5yz counting for nothing, a delivery resetting the
count, and back to the primary on a trial message, whatever the primary's connection gate says."""

from __future__ import annotations

import asyncio

from mailstorm.harness.reference.failover import Failover
from mailstorm.harness.reference.relay import Outcome

REFUSED = Outcome("transient", None, "ConnectionRefusedError")
THROTTLED = Outcome("transient", 454, "Throttling failure")
BOUNCED = Outcome("permanent", 550, "no such user")
SENT = Outcome("delivered", 250, "ok")


def _chain(**kw) -> Failover:
    return Failover(2, lambda n: 60.0, **kw)  # a gate, once closed, stays closed for the test


def test_fails_over_after_n_consecutive_failures_only():
    f = _chain(failover_after=3)
    for outcome in (THROTTLED, THROTTLED, SENT, THROTTLED, BOUNCED, THROTTLED):
        f.settled(0, outcome)
    assert f.active == 0  # a delivery reset the count; a bounce is the message's fate, not the relay's
    f.settled(0, THROTTLED)
    assert f.active == 1 and f.switches == 1
    f.settled(0, REFUSED)  # an attempt begun before the switch says nothing about the active relay
    assert f.active == 1


def test_one_relay_never_switches():
    f = Failover(1, lambda n: 0.01, failover_after=1)
    f.settled(0, REFUSED)
    assert f.active == 0


def test_a_trial_through_the_primary_brings_it_back_whatever_its_gate():
    f = _chain(failover_after=1, probe_s=0.05)
    f.settled(0, REFUSED)  # closes the primary's gate for 60 s, and fails over
    assert f.active == 1 and not f.gates[0].open

    async def picks() -> list[tuple[int, bool]]:
        first = await f.choose()  # the secondary: the trial waits for probe_s
        await asyncio.sleep(0.06)  # the probe period
        return [first, await f.choose()]

    first, trial = asyncio.run(picks())
    assert first == (1, False) and trial == (0, True)
    f.settled(0, REFUSED, trial=True)
    assert f.active == 1  # a failed trial waits for the next one
    f.settled(0, SENT, trial=True)
    assert f.active == 0 and f.gates[0].open
