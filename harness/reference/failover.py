"""Failover between an ordered list of relays: which relay the next attempt goes to.

The first relay is the primary; the others are fallbacks in order. ``failover_after`` consecutive
failed attempts through the active relay (a transient outcome: a 4yz, or no reply at all: refused, cut,
timed out; a 5yz is the message's own fate, not the relay's) move the pipeline to the next relay (after
the last, back to the first). Any delivery through the active relay resets the count.

Failback probes with real mail, as a circuit breaker's half-open state does: while a fallback is
active, one attempt every ``probe_s`` goes to the primary instead (a trial). A trial the primary
delivers makes it active again at once; a failed trial costs that one message an ordinary retry (it is
deferred, and its retry goes through the active relay) and nothing else. A probe with a real message
rather than a bare connect or NOOP sees every way a relay can refuse (a 4yz at MAIL, RCPT or after
DATA, not only a closed port).

Each relay keeps its own connection gate (``Gate``: the destination backoff after connection failures),
so waiting out a dead primary's backoff never holds an attempt that could go through a live fallback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from mailstorm.harness.reference.relay import Outcome

log = logging.getLogger("mailstorm.reference")

_GATE_SLICE_S = 0.25  # how long a worker waits on a closed gate before it asks again which relay is active


class Gate:
    """Destination-level backoff after connection failures (``Deliverer``'s module docstring)."""

    def __init__(self, backoff: Callable[[int], float]) -> None:
        self._backoff = backoff
        self.until = 0.0  # monotonic
        self.failures = 0

    async def wait(self) -> None:
        while (delay := self.until - time.monotonic()) > 0:
            await asyncio.sleep(delay)  # the gate's own backoff period

    @property
    def open(self) -> bool:
        return time.monotonic() >= self.until

    def failed(self) -> None:
        if time.monotonic() >= self.until:  # one step per round, not one per worker of the round
            self.failures += 1
            self.until = time.monotonic() + self._backoff(self.failures)

    def reopened(self) -> None:
        self.failures = 0
        self.until = 0.0


class Failover:
    """The active relay among ``count`` of them, moved by the outcomes ``settled`` reports."""

    def __init__(
        self, count: int, backoff: Callable[[int], float], *, failover_after: int = 3, probe_s: float = 2.0
    ) -> None:
        self.count = count
        self.gates = [Gate(backoff) for _ in range(count)]
        self.failover_after = failover_after
        self.probe_s = probe_s
        self.active = 0
        self.failures = 0  # consecutive failed attempts through the active relay
        self.switches = 0
        self._next_probe = 0.0  # monotonic

    @property
    def gate(self) -> Gate:
        """The primary's gate (the only one when there is one relay)."""
        return self.gates[0]

    async def choose(self) -> tuple[int, bool]:
        """The relay for the next attempt, once its gate is open, and whether it is a failback trial."""
        while True:
            # The trial is the primary's probe: its own schedule, not the primary's gate (whose backoff,
            # grown through the outage, would put failback up to backoff_max after the primary is back).
            if self.active != 0 and time.monotonic() >= self._next_probe:
                self._next_probe = time.monotonic() + self.probe_s
                return 0, True
            index = self.active
            gate = self.gates[index]
            if gate.open:
                return index, False
            # Wait in slices: the active relay may change meanwhile (a failover, a failback).
            await asyncio.sleep(min(_GATE_SLICE_S, max(0.0, gate.until - time.monotonic())))

    def settled(self, index: int, outcome: Outcome, *, trial: bool = False) -> None:
        """What an attempt through relay ``index`` came to."""
        if trial:  # a failed trial only waits for the next one
            if outcome.status == "delivered":
                self.gates[0].reopened()
                self._switch(0, "the primary delivered a trial message")
            return
        gate = self.gates[index]
        if outcome.status == "transient" and outcome.code is None:
            gate.failed()
        elif outcome.code is not None:
            gate.reopened()  # the relay answered: it is there, whatever it said
        if index != self.active:
            return  # an attempt that began before a switch says nothing about the active relay
        if outcome.status == "delivered":
            self.failures = 0
        elif outcome.status == "transient":
            self.failures += 1
            if self.count > 1 and self.failures >= self.failover_after:
                why = f"{self.failures} consecutive failed attempts ({outcome.code or outcome.text})"
                self._switch((self.active + 1) % self.count, why)

    def _switch(self, index: int, why: str) -> None:
        log.warning("relay %d -> relay %d: %s", self.active, index, why)
        self.active = index
        self.failures = 0
        self.switches += 1
        self._next_probe = time.monotonic() + self.probe_s
