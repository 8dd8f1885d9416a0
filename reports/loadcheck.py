"""Was the planned load offered? Planned, offered and dropped arrivals, and who could not keep up.

- ``planned``: the arrivals the load processes set out to offer (``load.started`` ``planned``, summed:
  exact for uniform arrivals, the mean for Poisson ones). Without it (a closed model, or a ledger from
  before it was written): offered + dropped.
- ``offered``: the messages the generator really sent (one ``load.submit`` id each: ``submitted``).
- ``dropped``: arrivals the generator could not start within ``max_lag_s`` (``load.dropped`` counts).
  A uniform schedule that ran to its end gives planned = offered + dropped.

Who could not keep up, when arrivals were dropped (``cause``):

- ``generator``: the load generator itself was busy: a load process used at least ``CPU_BUSY`` of a CPU
  over its schedule, or its event loop ran a timer ``LOOP_LAG_MS`` late or more on average (CPU-bound, or
  starved of CPU by other processes) (``load.finished``); or the connections were not all busy (below)
  and still arrivals were not started in time.
- ``sut``: the generator had time to spare and every connection it may hold was busy waiting on the
  SUT. Little's law: busy connections = submissions per second x mean submission time = the sum of
  submission times / the span from the first start to the last answer; at ``SATURATED`` of
  ``load.max_connections`` or more the senders were saturated, and the SUT's answers set the pace: at
  most connections / mean submission time messages a second could be started.

The capacity section's own Little's-law check is reported beside it: ``generator_queue`` = offered rate x
mean (actual start - intended start), the arrivals waiting inside the generator on average.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mailstorm.ledger import Kind
from mailstorm.reports.ingest import Columns
from mailstorm.reports.outcomes import NEVER, Messages

CPU_BUSY = 0.8  # share of one CPU a load process used over its schedule
LOOP_LAG_MS = 10.0  # mean lateness of the event loop's timer
SATURATED = 0.9  # busy connections over the connections the generator may hold
_NS = 1_000_000_000


@dataclass(frozen=True)
class LoadCheck:
    planned: int
    offered: int
    dropped: int
    dropped_pct: float  # of planned
    cause: str | None  # "generator" | "sut" | None (nothing dropped)
    detail: str | None  # who could not keep up, with the figures that say so
    connections: int | None  # the most the generator could hold (load.max_connections)
    busy_connections: float | None  # Little's law: submissions/s x mean submission time
    submit_ms: float | None  # mean submission time (start to the SUT's answer)
    generator_queue: float  # Little's law: arrivals waiting inside the generator on average
    generator_cpu: float | None  # the busiest load process's CPU share over its schedule
    loop_lag_ms: float | None  # the laggiest load process's mean event-loop lateness

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def summary(self) -> str:
        """One sentence for the headline: planned vs offered, and who could not keep up."""
        text = f"Load: {self.offered:,} of {self.planned:,} planned arrivals offered"
        text += f", {self.dropped:,} dropped"
        if self.dropped:
            text += f" ({self.dropped_pct:.2f}%)"
        if self.cause == "generator":
            text += ": the load generator could not keep up"
        elif self.cause == "sut":
            text += ": the SUT's slow answers held the senders"
        return text + "."


def check_load(cols: Columns, msgs: Messages, load: dict[str, Any] | None, load_s: float) -> LoadCheck:
    """The load check of one run; ``load`` is the scenario's ``load`` section (for max_connections)."""
    starts = [r for r in cols.timeline if r.get("k") == Kind.LOAD_STARTED]
    finishes = [r for r in cols.timeline if r.get("k") == Kind.LOAD_FINISHED]
    drop = cols.table(Kind.LOAD_DROPPED)
    dropped = int(drop["count"].sum()) if len(drop) else 0
    offered = len(msgs.outcome)
    planned_known = [r["planned"] for r in starts if isinstance(r.get("planned"), int)]
    planned = sum(planned_known) if planned_known else offered + dropped

    wall_s = max((_num(r, "wall_s") for r in finishes), default=0.0) or load_s
    sub = cols.table(Kind.LOAD_SUBMIT)
    timed = (sub["start"] > 0) & (sub["end"] >= sub["start"])
    busy = submit_ms = sent_rate = None
    if timed.any():
        starts, ends = sub["start"][timed], sub["end"][timed]
        busy_s = float((ends - starts).sum()) / _NS
        span_s = float(ends.max() - starts.min()) / _NS  # while the senders worked (the drain included)
        submit_ms = 1e3 * busy_s / len(starts)
        if span_s > 0:
            busy, sent_rate = busy_s / span_s, len(starts) / span_s
    connections = _connections(finishes, load)
    started = msgs.first_start != NEVER
    lag_s = np.clip((msgs.first_start[started] - msgs.intended[started]) / _NS, 0, None)
    gen_queue = (offered + dropped) / wall_s * float(lag_s.mean()) if len(lag_s) and wall_s > 0 else 0.0
    cpu = max((_num(r, "cpu_s") / _num(r, "wall_s") for r in finishes if _num(r, "wall_s") > 0), default=None)
    lag = max((_num(r, "loop_lag_ms") for r in finishes), default=None)

    cause = detail = None
    if dropped:
        rates = (planned / wall_s if wall_s > 0 else 0.0, sent_rate or 0.0)
        cause, detail = _who(rates, busy, submit_ms, connections, cpu, lag)
        detail += f"; {gen_queue:,.1f} arrivals waited inside the generator on average (Little's law)"
    return LoadCheck(
        planned=planned,
        offered=offered,
        dropped=dropped,
        dropped_pct=round(100.0 * dropped / planned, 3) if planned else 0.0,
        cause=cause,
        detail=detail,
        connections=connections,
        busy_connections=None if busy is None else round(busy, 3),
        submit_ms=None if submit_ms is None else round(submit_ms, 3),
        generator_queue=round(gen_queue, 3),
        generator_cpu=None if cpu is None else round(cpu, 3),
        loop_lag_ms=None if lag is None else round(lag, 3),
    )


def _who(
    rates: tuple[float, float],
    busy: float | None,
    submit_ms: float | None,
    connections: int | None,
    cpu: float | None,
    lag: float | None,
) -> tuple[str, str]:
    """("generator" | "sut", why), from how busy the generator was and how busy its connections were."""
    held = f"{busy:,.1f}" if busy is not None else "an unknown number"
    of = f" of {connections:,}" if connections else ""
    advice = "add load.workers (load processes), or give the load a CPU of its own"
    gen = "the load generator could not keep up"
    if cpu is not None and cpu >= CPU_BUSY:
        why = f"a load process used {cpu:.0%} of a CPU over its schedule"
        return "generator", f"{gen}: {why}; {held}{of} connections were busy; {advice}"
    if lag is not None and lag >= LOOP_LAG_MS:
        why = f"its event loop ran {lag:,.1f} ms late on average (short of CPU)"
        return "generator", f"{gen}: {why}; {held}{of} connections were busy; {advice}"
    if busy is None or not connections or busy < SATURATED * connections or not submit_ms:
        why = f"only {held}{of} connections were busy with the SUT on average, yet arrivals started late"
        return "generator", f"{gen}: {why}; {advice}"
    planned_rate, sent_rate = rates
    ceiling = connections / (submit_ms / 1e3)
    return "sut", (
        f"the SUT's slow answers held the senders: {held}{of} connections were busy on average (Little's "
        f"law: {sent_rate:,.0f} submissions/s x {submit_ms:,.2f} ms each), so at most ~{ceiling:,.0f} msg/s "
        f"could be started of the {planned_rate:,.0f} msg/s planned; raise load.max_connections if the SUT "
        "takes more connections at once, else this is the SUT's pace"
    )


def _connections(finishes: list[dict[str, Any]], load: dict[str, Any] | None) -> int | None:
    held = [r["connections"] for r in finishes if isinstance(r.get("connections"), int)]
    if held:
        return sum(held)
    value = load.get("max_connections") if isinstance(load, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def _num(rec: dict[str, Any], name: str) -> float:
    value = rec.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
