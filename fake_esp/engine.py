"""The fault engine: which faults are installed, when they are active, and what each step gets.

Servers (SMTP here, the HTTP APIs in mailstorm.fake_esp.http) ask one question per step:

    action = engine.decide(phase, ctx)      # phase: connect|ehlo|mail|rcpt|data|eod|http
                                            # ctx: mailstorm.fake_esp.faults.base.Context (peer, session,
                                            #      mail_from, rcpt, auth_user, api_key, messages, ...)
    # then: wait action.delay_s; then by action.kind:
    #   "pass"/"delay" carry on; "reply" answer action.reply (a mailstorm.replies.Reply; 421 closes);
    #   "disconnect" cut the connection; "tarpit" write the answer one byte per action.byte_delay_s;
    #   "hang" never answer. action.fired lists every fault that acted (write one esp.fault record
    #   each); action.fault names the one that chose the kind.

For HTTP, the throttle key is ``ctx.api_key`` (spec key: api_key) and ``ctx.session`` a request id.

Decisions. Faults are evaluated in the order they were added (a replaced fault keeps its place). Each
fault whose phase matches and which is active draws its probability from the engine's own
``random.Random(seed)`` (only when probability < 1), so the same seed and the same sequence of steps
give the same decisions. Latency faults add up; the first fault answering anything else decides the
step and ends the evaluation. Stateful faults (throttle buckets, greylist triplets) keep their state
in the engine, one dict per installed fault, which ``reset()`` wipes and ``replace`` restarts.

Aim. A fault with a ``match``, a ``count`` or ``attempts`` (mailstorm.fake_esp.faults.aim) sees only the
steps it is aimed at: the match first (one ``MatchIndex`` per phase holds the matches of all its faults,
so a step pays one look-up per key whatever the number of faults), then the message's attempt number
(counted per fault and correlation id), then the probability. An action that uses up ``count`` ends
the fault: it is removed at once, its ``Fired`` says ``ended`` (the server writes esp.fault.ended) and
``on_end`` hooks are told (a worker tells the control process, which drops it from the store).

Time. ``after`` (s) delays activation from when the fault was added; ``ttl`` (s) removes it that long
after it became active (an outage ends after ``duration_s``, or its ttl if shorter). Times are wall
clock (``time.time``) so the worker processes of one ESP agree; tests pass a fake ``clock``.

Across processes. The control API's engine is the store; workers mirror it with ``snapshot()`` and
``load(snapshot)``, which keeps the state of faults that did not change. A worker's engine made with
``shared`` (mailstorm.fake_esp.shared) keeps the state of limits (faults with ``shared_state``) and of
every ``count``/``attempts`` scope in the memory all workers share, and runs those faults' steps under its
lock: a rate, a quota, a count is the ESP's, not a worker's.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mailstorm.fake_esp.faults import build
from mailstorm.fake_esp.faults.aim import MatchIndex
from mailstorm.fake_esp.faults.base import DELAY, PASS_ACTION, Action, Context, Fault, Fired
from mailstorm.fake_esp.shared import LocalMap, SharedState
from mailstorm.fake_esp.spec import fault_to_dict, parse_fault

log = logging.getLogger("mailstorm.fake_esp.engine")

_NEVER = float("inf")
_USED = ("used",)  # the scope's key of a count's actions (a tuple: never a correlation id)


@dataclass(slots=True)
class Entry:
    """One installed fault."""

    id: str
    spec: Any
    fault: Fault
    added_at: float
    active_from: float
    expires_at: float
    state: dict[str, Any] = field(default_factory=LocalMap)
    # The scope's own counts (``used``: actions so far under ``count``; a correlation id: attempts seen
    # under ``attempts``); the ``match`` is checked by the phase's MatchIndex, for every fault at once.
    scope: dict[Any, Any] = field(default_factory=LocalMap)
    aimed: bool = False  # a scope (count, attempts) to check before the fault sees a step
    locked: bool = False  # its state (or scope) is shared by the workers: its steps run under the lock

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": fault_to_dict(self.spec),
            "added_at": self.added_at,
            "active_from": self.active_from,
            "expires_at": None if self.expires_at == _NEVER else self.expires_at,
        }


def _match_index(phase: str, entries: list[Entry]) -> MatchIndex | None:
    if any(e.spec.match is not None for e in entries):
        return MatchIndex(phase, [(e, e.spec.match) for e in entries])
    return None


@dataclass(frozen=True)
class Outage:
    mode: str  # "refuse" | "hang"
    fault: str
    until: float
    on: frozenset[str]  # the parts of the ESP that are down: "smtp", "http", "webhooks"


class Engine:
    """Installed faults and their state; ``decide`` answers one step."""

    def __init__(
        self,
        seed: int | str = 0,
        *,
        clock: Callable[[], float] = time.time,
        shared: SharedState | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.clock = clock
        self.shared = shared
        self._entries: dict[str, Entry] = {}
        # Per phase: its faults in order, and the index of their matches when one has a match (an aim
        # that misses costs one look-up per key, not one test per fault).
        self._by_phase: dict[str, tuple[list[Entry], MatchIndex | None]] = {}
        self._next_change = _NEVER  # earliest active_from/expires_at still ahead: when to re-index
        # The outages among them (each listener's ticker asks 50 times a second; most faults are not).
        self._outages: list[Entry] = []
        self._ids = itertools.count(1)
        self.fired: Counter[str] = Counter()  # per fault id, cumulative over the process's life
        # Called with (fault id, added_at) when a fault ends itself (its count used up).
        self.on_end: list[Callable[[str, float], None]] = []

    # -- installing ------------------------------------------------------------------------------
    def add(self, spec: Any, *, fault_id: str | None = None, added_at: float | None = None) -> str:
        """Install a validated spec (or a dict, validated here). A duplicate id raises KeyError."""
        spec = parse_fault(spec) if isinstance(spec, dict) else spec
        fid = fault_id or spec.name or self._new_id(spec.type)
        if fid in self._entries:
            raise KeyError(fid)
        self._entries[fid] = self._entry(fid, spec, added_at)
        self._changed()
        return fid

    def put(self, fault_id: str, spec: Any) -> str:
        """Replace fault ``fault_id`` (fresh state, same place in the order) or add it under that id."""
        spec = parse_fault(spec) if isinstance(spec, dict) else spec
        self._entries[fault_id] = self._entry(fault_id, spec, None)
        self._changed()
        return fault_id

    def remove(self, fault_id: str) -> bool:
        gone = self._entries.pop(fault_id, None) is not None
        if gone:
            self._changed()
        return gone

    def reset(self) -> None:
        """Remove every fault and forget every state (counters of what fired stay: they are history)."""
        self._entries.clear()
        self._changed()

    def entries(self) -> list[dict[str, Any]]:
        self.expire()
        return [e.describe() for e in self._entries.values()]

    def get(self, fault_id: str) -> dict[str, Any] | None:
        self.expire()
        e = self._entries.get(fault_id)
        return e.describe() if e is not None else None

    def _new_id(self, type_name: str) -> str:
        while True:
            fid = f"{type_name}-{next(self._ids)}"
            if fid not in self._entries:
                return fid

    def _entry(self, fid: str, spec: Any, added_at: float | None) -> Entry:
        added = self.clock() if added_at is None else added_at
        active_from = added + (spec.after or 0.0)
        life = spec.ttl if spec.ttl is not None else _NEVER
        if spec.type == "outage":
            life = min(life, spec.duration_s)
        fault = build(spec)
        entry = Entry(fid, spec, fault, added, active_from, active_from + life)
        entry.aimed = spec.count is not None or spec.attempts is not None
        if self.shared is not None:
            if getattr(fault, "shared_state", False):
                entry.state = self.shared.view((fid, added, "state"))  # type: ignore[assignment]
                entry.locked = True
            if entry.aimed:
                entry.scope = self.shared.view((fid, added, "scope"))  # type: ignore[assignment]
                entry.locked = True
        return entry

    # -- mirroring across processes ----------------------------------------------------------------
    def snapshot(self) -> list[dict[str, Any]]:
        return self.entries()

    def load(self, snapshot: list[dict[str, Any]]) -> None:
        """Make the installed faults equal ``snapshot`` (from another engine); unchanged faults keep
        their state, so a worker's throttle bucket survives an unrelated fault being added."""
        fresh: dict[str, Entry] = {}
        for item in snapshot:
            old = self._entries.get(item["id"])
            spec = parse_fault(item["spec"])
            if old is not None and old.added_at == item["added_at"] and old.spec == spec:
                fresh[item["id"]] = old
            else:
                fresh[item["id"]] = self._entry(item["id"], spec, item["added_at"])
        self._entries = fresh
        self._changed()

    # -- time ----------------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._reindex(self.clock())

    def _reindex(self, now: float) -> None:
        for fid in [fid for fid, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[fid]
        self._outages = [e for e in self._entries.values() if e.spec.type == "outage"]
        by_phase: dict[str, list[Entry]] = {}
        upcoming = _NEVER
        for e in self._entries.values():
            if e.active_from > now:
                upcoming = min(upcoming, e.active_from)
                continue
            upcoming = min(upcoming, e.expires_at)
            for phase in e.spec.phases:
                by_phase.setdefault(phase, []).append(e)
        self._by_phase = {
            phase: (entries, _match_index(phase, entries)) for phase, entries in by_phase.items()
        }
        self._next_change = upcoming

    def expire(self) -> None:
        """Apply due activations and expiries now (decide does it lazily; the server's ticker too)."""
        now = self.clock()
        if now >= self._next_change:
            self._reindex(now)

    def outage(self, surface: str | None = None) -> Outage | None:
        """The outage in force now, if any; with ``surface`` ("smtp", "http", "webhooks"), only one that
        takes that part down (each listener closes or reopens on this, the webhook poster holds)."""
        self.expire()
        now = self.clock()
        for e in self._outages:
            if not e.active_from <= now < e.expires_at:
                continue
            if surface is None or surface in e.spec.on:
                return Outage(e.spec.mode, e.id, e.expires_at, frozenset(e.spec.on))
        return None

    # -- deciding ------------------------------------------------------------------------------------
    def decide(self, phase: str, ctx: Context) -> Action:
        """What step ``phase`` of ``ctx`` gets. Never raises: a failing fault is skipped and counted."""
        if self._next_change != _NEVER:
            self.expire()
        step = self._by_phase.get(phase)
        if step is None:
            return PASS_ACTION
        ctx.phase = phase
        candidates, aim = step
        if aim is not None:
            candidates = aim.select(ctx)  # the faults whose match this step passes, in order
            if not candidates:
                return PASS_ACTION
        now = self.clock()
        delay = 0.0
        fired: list[Fired] = []
        for e in candidates:
            if e.locked:
                assert self.shared is not None
                with self.shared.lock:
                    act, ended = self._step(e, ctx, phase, now)
            else:
                act, ended = self._step(e, ctx, phase, now)
            if act is None:
                continue
            self.fired[e.id] += 1
            if ended:
                self._end(e)
            if act.kind == DELAY:
                delay += act.delay_s
                fired.append(Fired(e.id, e.spec.type, DELAY, act.delay_s, ended))
                continue
            fired.append(Fired(e.id, e.spec.type, act.kind, ended=ended))
            return Action(act.kind, delay, act.reply, act.byte_delay_s, e.id, tuple(fired), act.hold_s)
        if not fired:
            return PASS_ACTION
        return Action(DELAY, delay, fault=fired[-1].fault, fired=tuple(fired))

    def _step(self, e: Entry, ctx: Context, phase: str, now: float) -> tuple[Action | None, int]:
        """Fault ``e`` at this step (its match passed): its action, and its count if this used it up."""
        if e.aimed and not self._in_scope(e, ctx):
            return None, 0
        p = e.spec.probability
        if p < 1.0 and self.rng.random() >= p:
            return None, 0
        try:
            act = e.fault.apply(ctx, e.state, self.rng, now)
        except Exception:  # a fault never raises into a server (design: errors logged and counted)
            log.exception("fault %s failed at %s; skipped", e.id, phase)
            self.fired[f"{e.id}:error"] += 1
            return None, 0
        if act is None:
            return None, 0
        count = e.spec.count
        return act, count if count is not None and self._count_used(e) else 0

    # -- aim -------------------------------------------------------------------------------------------
    def _in_scope(self, e: Entry, ctx: Context) -> bool:
        spec = e.spec
        if spec.count is not None and e.scope.get(_USED, 0) >= spec.count:
            return False  # used up (by another step of this turn, or another worker)
        if spec.attempts is not None:
            if ctx.msg_id is None:
                return False
            attempt = e.scope.get(ctx.msg_id, 0) + 1
            e.scope[ctx.msg_id] = attempt
            return attempt in spec.attempts
        return True

    def _count_used(self, e: Entry) -> bool:
        """Count one action under ``count``: True when it was the last."""
        used = e.scope.get(_USED, 0) + 1
        e.scope[_USED] = used
        return used == e.spec.count

    def _end(self, e: Entry) -> None:
        """The fault used up its count: remove it now and tell the hooks (the control process)."""
        if self._entries.get(e.id) is e:
            del self._entries[e.id]
            self._changed()
        for hook in self.on_end:
            hook(e.id, e.added_at)

    def end(self, fault_id: str, added_at: float) -> bool:
        """Remove a fault another engine saw end itself (if it is still that installation of it)."""
        e = self._entries.get(fault_id)
        if e is None or e.added_at != added_at:
            return False
        return self.remove(fault_id)
