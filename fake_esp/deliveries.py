"""The ESP's backlog: messages it accepted now and delivers later (a quota with ``over: queue``, a
backlog fault), each with an esp.delivered ledger record when its hold is over.

A message the ESP accepts without a hold is delivered when it is accepted (no esp.delivered record).
Held messages wait on the event loop's timers, in memory, and so do the hooks told of a delivery (the
webhooks): a fake ESP that stops or is killed delivers none of what it still holds (the ledger then has
their esp.accepted and no esp.delivered), as an ESP that lost its queue would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mailstorm.ledger import EspDelivered, LedgerWriter


class Deliveries:
    """One worker's held messages; ``hold`` schedules the esp.delivered record of each."""

    def __init__(self, ledger: LedgerWriter) -> None:
        self.ledger = ledger
        self._pending: set[asyncio.TimerHandle] = set()

    def hold(
        self,
        ids: list[tuple[str | None, str | None]],
        *,
        proto: str,
        api: str | None,
        fault: str,
        hold_s: float,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Deliver the messages ``ids`` ((correlation id, ESP message id) pairs) ``hold_s`` from now,
        then call ``then`` (what the ESP does once a message is delivered: its webhooks)."""
        due = time.time() + hold_s  # wall clock, as the quota windows are

        def deliver() -> None:
            self._deliver(ids, proto, api, fault, hold_s)
            if then is not None:
                then()

        self._at(due, deliver)

    def _at(self, due: float, deliver: Callable[[], None]) -> None:
        # The loop's timers may fire up to its clock resolution early (and run on the monotonic clock):
        # a delivery due at a window's start must not be written before it, so it waits out the rest.
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._pending.discard(handle)  # type: ignore[arg-type]
            if time.time() < due:
                self._at(due, deliver)
            else:
                deliver()

        handle = loop.call_later(max(0.0, due - time.time()), fire)
        self._pending.add(handle)

    def _deliver(
        self, ids: list[tuple[str | None, str | None]], proto: str, api: str | None, fault: str, held_s: float
    ) -> None:
        for cid, esp_id in ids:
            self.ledger.write(
                EspDelivered(id=cid, esp_id=esp_id, proto=proto, api=api, fault=fault, held_s=held_s)
            )

    @property
    def held(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
