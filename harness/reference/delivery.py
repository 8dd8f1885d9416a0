"""Delivery: the schedule of queued messages and the workers that relay them with retry and backoff.

The schedule lives in memory (a heap of due times), rebuilt from the queue file at start, so workers
never scan the table. ``concurrency`` workers each own one relay connection: that is the concurrency
limit towards the ESP. A transient failure (4yz, cut connection, timeout) reschedules the message after
``min(backoff_max, backoff_base * 2**(attempt-1))`` scaled by a seeded jitter in [0.5, 1) (AWS's "equal
jitter": spread retries of a burst, never retry sooner than half the step); a permanent failure (5yz),
or a transient one on the last allowed attempt, bounces it once.

A connection failure (refused, cut, timed out: no reply at all) also closes a destination gate, as
Postfix marks a dead destination: no worker tries the ESP again until the gate reopens (same backoff,
counted per failed round), so an outage costs about ``concurrency`` attempts per backoff period instead
of one failed attempt per queued message, and the first round after it ends finds the ESP back.

With several relays (``--relay`` given more than once) each attempt goes to the relay
``mailstorm.harness.reference.failover.Failover`` chooses: the primary, a fallback after
``failover_after`` consecutive failures, the primary again once a trial message gets through. Each worker
keeps one connection per relay it has used.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Callable

from mailstorm.harness.reference.campaigns import PREFIX as CAMPAIGN_PREFIX
from mailstorm.harness.reference.failover import Failover
from mailstorm.harness.reference.relay import Outcome
from mailstorm.harness.reference.store import Row, Store
from mailstorm.ledger import LedgerWriter, SutBounced, SutDeferred, SutRelayed

log = logging.getLogger("mailstorm.reference")


class Schedule:
    """Queue ids ordered by due time (UTC seconds); ``get`` waits for the next due one."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._wake = asyncio.Event()
        self.closed = False

    def put(self, qid: int, due: float = 0.0) -> None:
        heapq.heappush(self._heap, (due, qid))
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> int | None:
        """The next due queue id, or None once closed."""
        while not self.closed:
            delay = None
            if self._heap:
                due, qid = self._heap[0]
                delay = due - time.time()
                if delay <= 0:
                    heapq.heappop(self._heap)
                    return qid
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
            except TimeoutError:
                pass
        return None


class Deliverer:
    """Runs the relay workers and settles every attempt in the queue and the ledger."""

    def __init__(
        self,
        store: Store,
        ledger: LedgerWriter,
        relay_factory: Callable[[int], object],
        *,
        concurrency: int,
        max_attempts: int,
        backoff_base_s: float,
        backoff_max_s: float,
        seed: int,
        relays: int = 1,
        failover_after: int = 3,
        probe_s: float = 2.0,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.schedule = Schedule()
        self._relay_factory = relay_factory
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self.failover = Failover(relays, self.backoff, failover_after=failover_after, probe_s=probe_s)
        self._workers: list[asyncio.Task] = []
        self._relays: list = []
        self.counts = {"relayed": 0, "deferred": 0, "bounced": 0}
        self.failing_since: float | None = None  # monotonic time of the first failure of a failing run

    def start(self) -> None:
        for n in range(self.concurrency):
            self._workers.append(asyncio.create_task(self._work(), name=f"relay-{n}"))

    async def stop(self, grace_s: float) -> None:
        """Hand out no more messages, give attempts in flight ``grace_s`` to finish, then cut them
        (their rows stay queued and are retried by the next start)."""
        self.schedule.close()
        pending: set[asyncio.Task] = set()
        if self._workers:
            _, pending = await asyncio.wait(self._workers, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for relay in {id(r): r for r in self._relays}.values():
            await relay.close()

    def backoff(self, attempt: int) -> float:
        step = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        return step * (0.5 + 0.5 * self._rng.random())

    def _relay(self, clients: dict[int, object], index: int):
        if index not in clients:
            clients[index] = self._relay_factory(index)
            self._relays.append(clients[index])
        return clients[index]

    async def _work(self) -> None:
        clients: dict[int, object] = {}  # this worker's connection to each relay it has used
        while (qid := await self.schedule.get()) is not None:
            try:
                index, trial = await self.failover.choose()
                row = await self.store.load(qid)
                if row is None:
                    continue
                outcome = await self._relay(clients, index).send(row.mail_from, row.rcpts, row.data)
                self.failover.settled(index, outcome, trial=trial)
                await self._settle(row, outcome)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the worker: keep the row, retry later, say why
                log.exception("relay of queue id %s failed unexpectedly; retrying later", qid)
                self.schedule.put(qid, time.time() + self.backoff_max_s)

    async def _settle(self, row: Row, out: Outcome) -> None:
        attempt = row.attempts + 1
        for rcpt, code, text in out.refused:
            self.ledger.write(SutBounced(id=row.corr, code=code, text=text, rcpts=[rcpt], partial=True))
            self.counts["bounced"] += 1
        campaign = row.corr.startswith(CAMPAIGN_PREFIX)
        if out.status == "delivered" and campaign:
            self.store.mark_sent(row.id)  # first, with no await before it: see reference.campaigns
        if out.status == "permanent":
            rcpts = row.rcpts if campaign else None  # a campaign's bounce names its recipient
            self.ledger.write(
                SutBounced(id=row.corr, code=out.code, text=out.text, attempt=attempt, rcpts=rcpts)
            )
            self.counts["bounced"] += 1
            await self.store.remove(row.id)
            return
        if out.status == "delivered":
            self.failing_since = None
            self.ledger.write(SutRelayed(id=row.corr, attempt=attempt, code=out.code))
            self.counts["relayed"] += 1
            if not out.retry:
                await self.store.remove(row.id)
                return
            # A partial delivery: only the recipients refused for now stay queued.
            rcpt, code, text = out.retry[0]
            out = Outcome("transient", code, text, retry=out.retry)
        elif self.failing_since is None:
            self.failing_since = time.monotonic()
        await self._retry(row, attempt, out)

    async def _retry(self, row: Row, attempt: int, out: Outcome) -> None:
        rcpts = [r for r, _, _ in out.retry] or None  # None: every recipient is still owed
        if attempt >= self.max_attempts:
            text = f"gave up after {attempt} attempts: {out.text}"
            rcpts = row.rcpts if row.corr.startswith(CAMPAIGN_PREFIX) else None
            self.ledger.write(SutBounced(id=row.corr, code=out.code, text=text, attempt=attempt, rcpts=rcpts))
            self.counts["bounced"] += 1
            await self.store.remove(row.id)
            return
        delay = self.backoff(attempt)
        self.ledger.write(
            SutDeferred(
                id=row.corr, attempt=attempt, code=out.code, text=out.text, retry_in_s=round(delay, 3)
            )
        )
        self.counts["deferred"] += 1
        due = time.time() + delay
        await self.store.defer(row.id, attempt, due, rcpts)
        self.schedule.put(row.id, due)
