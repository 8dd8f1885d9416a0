"""The limits of one ESP held by all its worker processes together: fault state in shared memory.

With ``--processes N`` each worker has its own engine; a limit kept in each engine's memory would be a
limit per worker (``--rate 14 --processes 2`` let 28/s through). ``SharedState`` is made by the parent
before it forks the workers, so every worker maps the same memory: a lock (``multiprocessing.Lock``, a
semaphore in shared memory) and one table of slots. The engine gives a fault that keeps state
(``FaultBase.shared_state``: throttle, quota, greylist) and every ``count``/``attempts`` scope a
``SharedMap`` in that table instead of a dict, and runs its step under the lock, so a token taken by one
worker is gone for the others and a count is the ESP's. The concurrency fault reads the ESP's open
sessions from ``open_sessions``, which every worker's SMTP listener keeps, and over HTTP the ESP's
requests in flight from ``open_requests``, which every worker's HTTP server keeps.

Values are what fault state holds: a number or a pair of numbers (a bucket's tokens and time). Keys are
hashed with Python's ``hash`` (the workers are forks of one parent: one hash secret) together with the
fault's id and installation time, so a replaced fault starts afresh. The table has ``SLOTS`` slots and
probes ``PROBES`` of them; when all are taken (more live keys than a test or a load run has: a key is a
client IP, a sender domain, an API key, or a message under ``attempts``) the oldest probe slot is reused,
forgetting that key's state. One process (``--processes 1``) has no SharedState and no lock: each fault's
state is a ``LocalMap``, a dict bounded the same way (at most ``SLOTS`` keys, the least recently written
forgotten first), so that a day of distinct keys (greylist triplets, ``attempts`` per message) keeps
the fake ESP's memory flat.

Tolerance: the lock makes every read-modify-write whole, so a shared bucket admits exactly what one
bucket admits; what differs from one process is only when each worker's clock is read (all use
``time.time``), well under a millisecond. An open session or request is counted (under the lock) before
the concurrency fault reads the count, so the ESP never has more than ``max_sessions`` admitted at once,
exactly as one worker. tests/fake_esp/test_shared_limits.py measures both.
"""

from __future__ import annotations

import multiprocessing
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

SLOTS = 1 << 16
PROBES = 32
_WIDTH = 4  # per slot: key hash (0 = free), first value, second value, how many values (1 or 2)
_HASH_MASK = (1 << 52) - 1  # a hash held exactly by a double


class SharedState:
    """The shared memory of one ESP's workers (made before the fork)."""

    def __init__(self, slots: int = SLOTS) -> None:
        ctx = multiprocessing.get_context("fork")
        self.lock = ctx.Lock()
        self.slots = slots
        self._table = ctx.RawArray("d", slots * _WIDTH)
        self._open = ctx.RawValue("q", 0)
        self._requests = ctx.RawValue("q", 0)

    def view(self, namespace: Hashable) -> SharedMap:
        return SharedMap(self, namespace)

    def _add(self, gauge: Any, n: int) -> int:
        with self.lock:
            gauge.value += n
            return gauge.value

    def session_opened(self) -> int:
        return self._add(self._open, 1)

    def session_closed(self) -> None:
        self._add(self._open, -1)

    @property
    def open_sessions(self) -> int:
        return self._open.value

    def request_opened(self) -> None:
        self._add(self._requests, 1)

    def request_closed(self) -> None:
        self._add(self._requests, -1)

    @property
    def open_requests(self) -> int:
        """The HTTP requests in flight on every worker (what a concurrency fault at phase http reads)."""
        return self._requests.value

    # -- the table (callers hold the lock) -----------------------------------------------------------
    def _find(self, h: float, *, insert: bool) -> int | None:
        table, slots = self._table, self.slots
        start = int(h) % slots
        for i in range(PROBES):
            base = ((start + i) % slots) * _WIDTH
            held = table[base]
            if held == h:
                return base
            if held == 0.0:
                if not insert:
                    return None
                table[base] = h
                return base
        if not insert:
            return None
        base = start * _WIDTH  # full: forget the key in the first probe slot
        table[base] = h
        return base


class SharedMap:
    """The dict-like state of one fault (``get``, ``[key] = value``, ``setdefault``) in the shared table.
    Values are numbers or pairs of numbers; the caller holds ``SharedState.lock``."""

    __slots__ = ("_ns", "_state")

    def __init__(self, state: SharedState, namespace: Hashable) -> None:
        self._state = state
        self._ns = namespace

    def _hash(self, key: Hashable) -> float:
        return float((hash((self._ns, key)) & _HASH_MASK) or 1)

    def get(self, key: Hashable, default: Any = None) -> Any:
        base = self._state._find(self._hash(key), insert=False)
        if base is None:
            return default
        table = self._state._table
        n = table[base + 3]
        if n == 0.0:
            return default
        return table[base + 1] if n == 1.0 else (table[base + 1], table[base + 2])

    def __setitem__(self, key: Hashable, value: Any) -> None:
        base = self._state._find(self._hash(key), insert=True)
        assert base is not None
        table = self._state._table
        if isinstance(value, tuple):
            table[base + 1], table[base + 2], table[base + 3] = float(value[0]), float(value[1]), 2.0
        else:
            table[base + 1], table[base + 3] = float(value), 1.0

    def clear(self) -> None:
        """Nothing to wipe: a fault installed again has a new namespace (its id and time)."""


class LocalMap(OrderedDict):
    """One process's state of one fault: a dict of at most ``limit`` keys; writing one more forgets the
    least recently written (for a greylist triplet: greylisted again as new; for a message under
    ``attempts``: its attempts counted from one again; for a quota or throttle key: a fresh window or
    bucket)."""

    def __init__(self, limit: int = SLOTS) -> None:
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Hashable, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        if len(self) > self.limit:
            self.popitem(last=False)
