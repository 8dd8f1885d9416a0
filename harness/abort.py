"""Fail fast: the SLOs marked ``abort: true`` judged while the run goes, and the breach that stops it.

``AbortJudge`` reads the records the runner tails (mailstorm.harness.progress) and the outcomes the fate
module's incremental form gives them (``LiveStats.fates``: the reports' own rules), and names the first
breach that can no longer recover:

- ``max_lost``: more than the limit of messages the fate rules call lost (the SUT took them; they are
  neither at the ESP, refused, deferred nor held) whose intended send is over ``after`` seconds old,
  less the ESP's acceptances of unknown ids (the fate rules call those messages uncorrelated);
- ``max_duplicated``, ``max_bounced``, ``max_dropped``: the count is over its limit (those only grow;
  a percentage of planned arrivals is judged once the load processes said what they planned);
- ``p95_e2e_ms``, ``p99_e2e_ms``: the live percentile over ``after`` seconds without a break. Its
  sample is the end-to-end latency of the messages first delivered in the last ``WINDOW_S`` seconds
  plus the age of every message still on its way (a lower bound of its latency): an ESP that takes
  nothing breaches it as surely as a slow one, without waiting for deliveries that never come;
- ``min_throughput``: no delivery for ``after`` seconds of load.

The runner asks ``check`` once a tick during the load; a ``Breach`` says what, the figure, and when,
and the runner stops the load, drains for at most ``ABORT_DRAIN_S`` and writes it to the timeline
(``run.aborted``), where every report reads it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from mailstorm.harness.progress import LiveStats
from mailstorm.ledger import EspAccepted, LoadSubmit, Record, RunAborted
from mailstorm.reports.fate import LOST, PENDING
from mailstorm.reports.spec import SloSpec

WINDOW_S = 10.0  # the deliveries a live percentile is taken over
ABORT_DRAIN_S = 5.0  # after an abort: how long what is in flight gets to arrive
JUDGE_EVERY_S = 1.0  # a judgement scans the messages on their way: not at every tick
_NS = 1_000_000_000
_QUANTILE = {"p95_e2e_ms": 0.95, "p99_e2e_ms": 0.99}


@dataclass(frozen=True)
class Breach:
    """An SLO breached beyond recovery: which, its limit, the live figure, and why in words."""

    slo: str
    limit: float
    actual: float
    after_s: float | None
    detail: str

    def record(self, at_s: float) -> RunAborted:
        return RunAborted(
            slo=self.slo,
            limit=self.limit,
            actual=self.actual,
            after_s=self.after_s,
            at_s=at_s,
            detail=self.detail,
        )


class AbortJudge:
    """The abort rules of one run's ``SloSpec``, judged on ``stats`` and the records fed alongside it."""

    def __init__(self, slo: SloSpec, stats: LiveStats) -> None:
        self.slo = slo
        self.stats = stats
        self.rules = {
            name: rule.after_s for name, rule in slo.aborts.items() if getattr(slo, name) is not None
        }
        # Messages submitted and not yet delivered: their intended send (ns), in the order first seen.
        self._on_way: dict[str, int] = {}
        self._early: dict[str, int] = {}  # ESP acceptances read before their submission: id -> ns
        self._delivered: deque[tuple[int, float]] = deque()  # (first delivery ns, end-to-end ms)
        self._over_since: dict[str, int] = {}  # percentile rules: when the breach began (ns)
        self._next_ns = 0

    def __bool__(self) -> bool:
        return bool(self.rules)

    def feed(self, records: Iterable[Record]) -> None:
        """The records the runner tailed (in any order: an ESP's file may be read before the load's)."""
        if not self.rules:
            return
        for rec in records:
            if isinstance(rec, LoadSubmit):
                if (esp_t := self._early.pop(rec.id, None)) is not None:
                    self._deliver(rec.intended, esp_t)
                else:
                    old = self._on_way.get(rec.id)
                    self._on_way[rec.id] = rec.intended if old is None else min(old, rec.intended)
            elif isinstance(rec, EspAccepted) and rec.id is not None:
                if (intended := self._on_way.pop(rec.id, None)) is not None:
                    self._deliver(intended, rec.t)
                else:
                    self._early.setdefault(rec.id, rec.t)

    def _deliver(self, intended: int, esp_t: int) -> None:
        self._delivered.append((esp_t, (esp_t - intended) / 1e6))

    def check(self, now_ns: int) -> Breach | None:
        """The first breach beyond recovery at ``now_ns`` (wall clock), or None."""
        if not self.rules or now_ns < self._next_ns or self.stats.load_t0_ns is None:
            return None
        self._next_ns = now_ns + int(JUDGE_EVERY_S * _NS)
        horizon = now_ns - int(WINDOW_S * _NS)
        while self._delivered and self._delivered[0][0] < horizon:
            self._delivered.popleft()
        # An acceptance whose submission never came (a duplicate, an id the pipeline made up) is of no
        # use once it is older than the window.
        self._early = {mid: t for mid, t in self._early.items() if t >= horizon}
        waiting = self._waiting(now_ns)
        for name, after_s in self.rules.items():
            breach = self._judge(name, after_s, now_ns, waiting)
            if breach is not None:
                return breach
        return None

    def _waiting(self, now_ns: int) -> list[tuple[int, int]]:
        """(outcome, age ns) of every message on its way that the SUT holds (lost or pending if the run
        ended now); the settled ones leave ``_on_way``."""
        fates, out, settled = self.stats.fates, [], []
        for mid, intended in self._on_way.items():
            outcome = fates.outcome(mid)
            if outcome in (LOST, PENDING):
                out.append((outcome, now_ns - intended))
            else:
                settled.append(mid)  # at the ESP, or refused (no latency; a retry brings it back)
        for mid in settled:
            del self._on_way[mid]
        return out

    def _judge(self, name: str, after_s: float, now_ns: int, waiting: list[tuple[int, int]]) -> Breach | None:
        s, limit = self.stats, getattr(self.slo, name)
        if name == "max_lost":
            old = sum(1 for outcome, age in waiting if outcome == LOST and age > after_s * _NS)
            lost = max(0, old - s.fates.esp_unmatched)
            if lost > limit:
                detail = (
                    f"{lost:,} messages the SUT took were neither at the ESP, refused nor held after "
                    f"{after_s:g} s (max_lost {limit:g})"
                )
                return Breach(name, limit, lost, after_s, detail)
        elif name in ("max_duplicated", "max_bounced"):
            count = s.duplicates if name == "max_duplicated" else s.bounced
            if count > limit:
                what = "duplicated at the ESP" if name == "max_duplicated" else "bounced"
                return Breach(name, limit, count, None, f"{count:,} messages {what} ({name} {limit:g})")
        elif name == "max_dropped":
            if isinstance(limit, str) and s.planned_by_load is None:
                return None  # a share of a plan not yet known
            allowed = self.slo.dropped_limit(s.planned)
            if s.dropped > allowed:
                detail = f"{s.dropped:,} planned arrivals dropped by the load generator (max_dropped {limit})"
                return Breach(name, allowed, s.dropped, None, detail)
        elif name in _QUANTILE:
            return self._percentile(name, limit, after_s, now_ns, waiting)
        elif name == "min_throughput":
            since = max(s.last_delivery_ns, s.load_t0_ns or 0)
            idle_s = (now_ns - since) / _NS
            if idle_s > after_s:
                detail = f"no message delivered for {idle_s:.1f} s of load (min_throughput {limit:g} msg/s)"
                return Breach(name, limit, 0.0, after_s, detail)
        return None

    def _percentile(
        self, name: str, limit: float, after_s: float, now_ns: int, waiting: list[tuple[int, int]]
    ) -> Breach | None:
        sample = [ms for _, ms in self._delivered] + [age / 1e6 for _, age in waiting]
        n = len(sample)
        # Nearest rank: the percentile is the k-th smallest value, over the limit when more than n - k are.
        over = sum(ms > limit for ms in sample)
        if not n or over <= n - math.ceil(_QUANTILE[name] * n):
            self._over_since.pop(name, None)
            return None
        since = self._over_since.setdefault(name, now_ns)
        if now_ns - since < after_s * _NS:
            return None
        value = sorted(sample)[math.ceil(_QUANTILE[name] * n) - 1]
        label = name.split("_")[0]
        detail = (
            f"end-to-end {label} over {limit:g} ms for {after_s:g} s: {value:,.0f} ms over the last "
            f"{WINDOW_S:g} s of deliveries and {len(waiting):,} messages on their way ({name} {limit:g})"
        )
        return Breach(name, limit, round(value, 3), after_s, detail)
