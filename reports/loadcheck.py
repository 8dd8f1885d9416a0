"""Was the planned load offered? Planned, offered and dropped arrivals, and who could not keep up.

- ``planned``: the arrivals the load processes set out to offer (``load.started`` ``planned``, summed:
  exact for uniform arrivals, the mean for Poisson ones). Without it (a closed model, or a ledger from
  before it was written): offered + dropped.
- ``offered``: the messages the generator really sent (one ``load.submit`` id each: ``submitted``).
- ``dropped``: arrivals the generator could not start within ``max_lag_s`` (``load.dropped`` counts).
  A uniform schedule that ran to its end gives planned = offered + dropped.

Who could not keep up, when arrivals were dropped (``cause``), judged over the *drop windows*: the
time each dropped arrival waited for a connection, from its intended time to ``max_lag_s`` later:

- ``generator``: the load generator itself was busy: a load process used at least ``CPU_BUSY`` of a CPU
  over its schedule (``load.finished``), or its event loop ran a timer ``LOOP_LAG_MS`` late or more
  when it dropped (``load.dropped`` ``loop_lag_ms``: CPU-bound, or starved of CPU by other processes);
  or its connections were not all busy in the drop windows, and still arrivals were not started.
- ``sut``: the generator had time to spare and every connection it may hold was busy waiting on the
  SUT in the drop windows (at least ``SATURATED`` of ``load.max_connections`` in flight on average):
  the SUT's answers set the pace. Little's law over those windows: time per submission = submissions
  in flight / answers per second (none at all: the SUT answered nothing, a stall).

Little's law figures over the whole run are reported beside them: ``busy_connections`` = submissions
per second x mean submission time, and the capacity section's own check, ``generator_queue`` =
offered rate x mean (actual start - intended start), the arrivals waiting inside the generator.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mailstorm.ledger import Kind, LoadFinished, LoadStarted
from mailstorm.reports.fate import NEVER
from mailstorm.reports.store import Store

CPU_BUSY = 0.8  # share of one CPU a load process used over its schedule
LOOP_LAG_MS = 10.0  # mean lateness of the event loop's timer
SATURATED = 0.9  # submissions in flight over the connections the generator may hold
DEFAULT_MAX_LAG_S = 1.0  # LoadSpec's default, for a run directory without its scenario
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
    busy_connections: float | None  # Little's law over the run: submissions/s x mean submission time
    submit_ms: float | None  # mean submission time over the run (start to the SUT's answer)
    busy_at_drops: float | None  # mean submissions in flight in the drop windows
    submit_ms_at_drops: float | None  # Little's law in the drop windows (None: no answer came)
    generator_queue: float  # Little's law: arrivals waiting inside the generator on average
    generator_cpu: float | None  # the busiest load process's CPU share over its schedule
    loop_lag_ms: float | None  # the laggiest load process's mean event-loop lateness over its schedule
    loop_lag_at_drops_ms: float | None  # the event loop's lateness when arrivals were dropped

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


def check_load(store: Store, load: dict[str, Any] | None, load_s: float) -> LoadCheck:
    """The load check of one run; ``load`` is the scenario's ``load`` section (max_connections,
    max_lag_s). Its figures are sums over ``store``'s ``load.submit`` and ``load.dropped`` records and
    its ``msg`` table, taken in SQL (``_in_flight``, ``_waited``)."""
    starts = [r for r in store.timeline if isinstance(r, LoadStarted)]
    finishes = [r for r in store.timeline if isinstance(r, LoadFinished)]
    dropped, lag_mean = store.one(
        f"""SELECT coalesce(sum(coalesce("count", 0)), 0)::BIGINT,
                fsum(loop_lag_ms * coalesce("count", 0)) FILTER (WHERE loop_lag_ms IS NOT NULL)
                / nullif(sum(coalesce("count", 0)) FILTER (WHERE loop_lag_ms IS NOT NULL), 0)
            FROM rec WHERE k = '{Kind.LOAD_DROPPED}'"""
    )
    offered, started, waited_ns = _waited(store)
    planned_known = [r.planned for r in starts if isinstance(r.planned, int)]
    planned = sum(planned_known) if planned_known else offered + dropped
    wall_s = max((_num(r, "wall_s") for r in finishes), default=0.0) or load_s

    count, total_ns, span_ns = store.one(
        f"""SELECT count(*), coalesce(sum("end" - start), 0), coalesce(max("end") - min(start), 0)
            FROM rec WHERE k = '{Kind.LOAD_SUBMIT}' AND {_TIMED}"""
    )
    busy = submit_ms = None
    if count:
        submit_ms = 1e3 * (int(total_ns) / _NS) / count
        # while the senders worked (the drain included)
        busy = (int(total_ns) / _NS) / (span_ns / _NS) if span_ns > 0 else None
    connections = _setting(load, "max_connections", int)
    held = [r.connections for r in finishes]
    connections = sum(held) if held else connections
    waited_s = int(waited_ns) / _NS / started if started else None
    gen_queue = (offered + dropped) / wall_s * waited_s if waited_s is not None and wall_s > 0 else 0.0
    cpu = max((_num(r, "cpu_s") / _num(r, "wall_s") for r in finishes if _num(r, "wall_s") > 0), default=None)
    lag = max((_num(r, "loop_lag_ms") for r in finishes), default=None)

    at_drops = at_drops_ms = lag_at_drops = None
    cause = detail = None
    if dropped:
        max_lag_s = _setting(load, "max_lag_s", float) or DEFAULT_MAX_LAG_S
        if count:
            at_drops, at_drops_ms = _in_flight(store, int(max_lag_s * _NS))
        lag_at_drops = None if lag_mean is None else float(lag_mean)  # weighted by the drops
        late = lag_at_drops if lag_at_drops is not None else lag  # an older ledger: the run's mean
        busy_gen = (cpu is not None and cpu >= CPU_BUSY) or (late is not None and late >= LOOP_LAG_MS)
        saturated = at_drops is not None and bool(connections) and at_drops >= SATURATED * connections
        cause = "generator" if busy_gen or not saturated else "sut"
        detail = _why(cause, connections, at_drops, at_drops_ms, cpu, late)
        detail += f"; {gen_queue:,.1f} arrivals waited inside the generator on average (Little's law)"
    return LoadCheck(
        planned=planned,
        offered=offered,
        dropped=dropped,
        dropped_pct=round(100.0 * dropped / planned, 3) if planned else 0.0,
        cause=cause,
        detail=detail,
        connections=connections,
        busy_connections=_round(busy),
        submit_ms=_round(submit_ms),
        busy_at_drops=_round(at_drops),
        submit_ms_at_drops=_round(at_drops_ms),
        generator_queue=round(gen_queue, 3),
        generator_cpu=_round(cpu),
        loop_lag_ms=_round(lag),
        loop_lag_at_drops_ms=_round(lag_at_drops),
    )


def _why(
    cause: str,
    connections: int | None,
    at_drops: float | None,
    at_drops_ms: float | None,
    cpu: float | None,
    lag: float | None,
) -> str:
    """Who could not keep up, with the figures that say so."""
    held = f"{at_drops:,.1f}" if at_drops is not None else "an unknown number"
    of = f" of {connections:,}" if connections else ""
    if cause == "sut":
        pace = (
            f"submissions took {at_drops_ms:,.1f} ms each then (Little's law), so {connections:,} "
            f"connections carried at most ~{1e3 * (connections or 0) / at_drops_ms:,.0f} msg/s"
            if at_drops_ms
            else "the SUT answered none of them in the meantime"
        )
        return (
            f"the SUT's slow answers held the senders: {held}{of} connections were busy waiting on it while "
            f"arrivals were dropped; {pace}; raise load.max_connections (or load.max_lag_s) if the SUT takes "
            "more at once, else this is the SUT's pace"
        )
    if cpu is not None and cpu >= CPU_BUSY:
        why = f"a load process used {cpu:.0%} of a CPU over its schedule"
    elif lag is not None and lag >= LOOP_LAG_MS:
        why = f"its event loop ran {lag:,.1f} ms late when it dropped arrivals (short of CPU)"
    else:
        why = "its connections were not all busy, yet arrivals were not started in time"
    return (
        f"the load generator could not keep up: {why}; {held}{of} connections were busy with the SUT "
        "meanwhile; add load.workers (load processes), or give the load a CPU of its own"
    )


# A submission with its own start and end (an older writer may leave either out).
_TIMED = 'start > 0 AND "end" >= start'


def _waited(store: Store) -> tuple[int, int, int]:
    """(messages, of them started, their summed wait in ns): the wait is actual start - intended
    start, clipped at 0 (a message begun early waited for nothing)."""
    offered, started, waited = store.one(
        f"""SELECT count(*), count(*) FILTER (WHERE first_start != {NEVER}),
                coalesce(sum(greatest(first_start - intended, 0)) FILTER (WHERE first_start != {NEVER}), 0)
            FROM msg"""
    )
    return int(offered), int(started), int(waited)


def _in_flight(store: Store, width_ns: int) -> tuple[float | None, float | None]:
    """(mean submissions in flight, Little's-law time per submission in ms) over the drop windows:
    the union of [intended, intended + ``width_ns``] of every ``load.dropped`` record (None for the
    time when no submission ended in them).

    At a time t, the submission-time in flight before t is ``t * (starts before t) - (their sum) -
    t * (ends before t) + (their sum)``; a window's share is that at its end minus that at its start,
    and its answers the ends between. The counts and sums before each window edge come from the
    submissions bucketed by the last edge at or before them (an ASOF join: no range join, no sort of
    every submission in one thread), then summed over the buckets in order."""
    length, overlap, answers = store.one(
        f"""WITH d AS (SELECT DISTINCT coalesce(intended, 0) AS a FROM rec WHERE k = '{Kind.LOAD_DROPPED}'),
            opened AS (  -- a window opens a new interval when it begins after the one before it ended
                SELECT a, coalesce(a > lag(a) OVER (ORDER BY a) + {width_ns}, true) AS new FROM d
            ), grouped AS (SELECT a, sum(new::INTEGER) OVER (ORDER BY a) AS g FROM opened),
            w AS (SELECT min(a) AS a, max(a) + {width_ns} AS b FROM grouped GROUP BY g),
            edges AS (  -- edge -1: a window's start, 1: its end; j: its rank in time (edges are distinct)
                SELECT t, edge, row_number() OVER (ORDER BY t) AS j
                FROM (SELECT a AS t, -1 AS edge FROM w UNION ALL SELECT b, 1 FROM w)
            ), s AS (SELECT start, "end" FROM rec WHERE k = '{Kind.LOAD_SUBMIT}' AND {_TIMED}),
            starts AS (  -- bucket k: at or after edge k, before edge k + 1 (0: before every edge)
                SELECT coalesce(e.j, 0) AS k, count(*) AS n, sum(s.start) AS total
                FROM s ASOF LEFT JOIN edges AS e ON s.start >= e.t GROUP BY ALL
            ), ends AS (
                SELECT coalesce(e.j, 0) AS k, count(*) AS n, sum(s."end") AS total
                FROM s ASOF LEFT JOIN edges AS e ON s."end" >= e.t GROUP BY ALL
            ), upto AS (  -- counts and sums of the buckets up to k
                SELECT k, sum(coalesce(starts.n, 0)) OVER o AS n_s,
                    sum(coalesce(starts.total, 0)) OVER o AS sum_s, sum(coalesce(ends.n, 0)) OVER o AS n_e,
                    sum(coalesce(ends.total, 0)) OVER o AS sum_e
                FROM starts FULL JOIN ends USING (k) WINDOW o AS (ORDER BY k ROWS UNBOUNDED PRECEDING)
            ), before AS (  -- at each edge j: what lies before it, buckets up to j - 1
                SELECT e.t, e.edge, coalesce(u.n_s, 0) AS n_s, coalesce(u.sum_s, 0) AS sum_s,
                    coalesce(u.n_e, 0) AS n_e, coalesce(u.sum_e, 0) AS sum_e
                FROM edges AS e ASOF LEFT JOIN upto AS u ON e.j - 1 >= u.k
            )
            SELECT sum(edge * t), sum(edge * (t * n_s - sum_s - t * n_e + sum_e)), sum(edge * n_e)
            FROM before"""
    )
    if not length or length <= 0:
        return None, None
    length_s = int(length) / _NS
    in_flight = int(overlap) / _NS / length_s
    return in_flight, (1e3 * in_flight * length_s / answers if answers else None)


def _setting(load: dict[str, Any] | None, name: str, kind: type) -> Any:
    value = load.get(name) if isinstance(load, dict) else None
    return (
        kind(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _num(rec: LoadFinished, name: str) -> float:
    value = getattr(rec, name, None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
