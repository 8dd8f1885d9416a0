"""Analytics accuracy: how far the SUT's event counts are from the events the ESP posted it.

The truth is the fake ESP's webhook ledger: one ``esp.webhook`` record per event per posting attempt,
each with the event's id (the same across retries and duplicate copies), its canonical kind and the
answer it got. The SUT's count comes from one of two places, the first that the run has:

- ``analytics.probe`` records (the runner polled the SUT's analytics endpoint, JSON or Prometheus,
  during the run and once after the drain): counts per event kind, no event ids. The last answered poll
  is the SUT's final count; missed and double-counted are then what the difference shows
  (``exact: false``: an event missed and another counted twice cancel out in a count).
- ``sut.event`` records (the SUT wrote one per count it made): exact, event id by event id.

Per event kind:

    sent            distinct events the ESP posted at least once
    acknowledged    of those, answered 2xx at least once
    not_posted      events a ``drop`` webhook fault kept from ever being posted (not in sent)
    counted         what the SUT counted (its count, or its sut.event records)
    missed          sent events the SUT did not count
    double_counted  counts beyond one per sent event (and counts of events the ESP never posted)
    error           missed + double_counted; error_ratio = error / sent

Per fault window, for the events first posted inside it and for those first posted after it (until the
next window opens): the same figures (the counts only with ``sut.event``), plus the gap: the most
events the SUT's count was behind the events posted so far, second by second from the window's start to
the first second its count is known again after it, and the seconds in the window when its analytics
did not answer at all (probe mode). ``series`` holds the cumulative
sent, acknowledged and counted events per second of the run (counted null while the probe got no answer).

The work is SQL over the run's ``Store`` (reports/store.py): the webhook records reduced to one row per
event (its kind, first attempt, first 2xx, whether a fault dropped it) and the SUT's counts per event id
stay in DuckDB; Python holds the figures per kind and window, the series (per second of the run) and the
probe's polls (``Store.whole``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from mailstorm.ledger import AnalyticsProbe, EspWebhook, Kind, SutEvent
from mailstorm.reports.recovery import Window
from mailstorm.reports.slo import SloResult
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import Store

_NS = 1_000_000_000
NEVER = 2**63 - 1
# The run's events, one row each: kind (each of an event's records carries it), first attempt and first
# 2xx (NULL: none), dropped by a fault; and the SUT's counts per event id (sut.event records).
# Temporary tables while the section runs.
_EVENTS, _COUNTS = "analytics_events", "analytics_counts"
_EVENTS_SQL = f"""CREATE TEMP TABLE {_EVENTS} AS SELECT event_id, min(event) AS event,
    min(t) FILTER (attempt != 0) AS first_t, min(t) FILTER (attempt != 0 AND ok) AS acked_t,
    bool_or(attempt = 0) AS dropped
    FROM {{hooks}} GROUP BY event_id"""
_COUNTS_SQL = f"""CREATE TEMP TABLE {_COUNTS} AS SELECT event_id, count(*) AS n
    FROM {{counted}} GROUP BY event_id"""
_POSTED = f"(SELECT * FROM {_EVENTS} WHERE first_t IS NOT NULL)"


def _row(
    sent: int, acked: int, dropped: int, counted: int | None, missed: int, double: int
) -> dict[str, Any]:
    """One kind's figures (or the total's); ``counted`` None: the SUT's count is unknown here."""
    row: dict[str, Any] = {"sent": sent, "acknowledged": acked, "not_posted": dropped}
    if counted is None:
        return row | dict.fromkeys(("counted", "missed", "double_counted", "error", "error_ratio"))
    return row | {"counted": counted, "missed": missed, "double_counted": double, "error": missed + double,
                  "error_ratio": round((missed + double) / sent, 6) if sent else None}  # fmt: skip


def _figures(sent: Counter, acked: Counter, dropped: Counter, counted: Counter | None,
             missed: Counter | None, double: Counter | None, kinds: list[str]) -> dict[str, Any]:  # fmt: skip
    """Per kind and in total; ``counted`` None: the SUT's count is unknown here."""
    out: dict[str, Any] = {}
    known = counted is not None and missed is not None and double is not None
    for kind in [*kinds, "total"]:
        pick = lambda c, k=kind: 0 if c is None else sum(c.values()) if k == "total" else c.get(k, 0)  # noqa: E731
        out[kind] = _row(pick(sent), pick(acked), pick(dropped), pick(counted) if known else None,
                         pick(missed), pick(double))  # fmt: skip
    return out


@dataclass
class Analytics:
    """The section's figures (``as_dict`` is report.json's ``analytics``)."""

    source: str | None  # "probe", "events", or None: the SUT's count is unknown
    exact: bool
    kinds: dict[str, dict[str, Any]]
    windows: list[dict[str, Any]]
    series: dict[str, list[Any]]
    probe: dict[str, Any] | None
    why_not: str | None  # when the accuracy cannot be judged: why

    @property
    def total(self) -> dict[str, Any]:
        return self.kinds["total"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "exact": self.exact,
            "kinds": self.kinds,
            "windows": self.windows,
            "series": self.series,
            "probe": self.probe,
            "cannot_judge": self.why_not,
        }


def analyze(store: Store, t0_ns: int, windows: list[Window], seconds: int) -> Analytics | None:
    """The run's analytics figures; None when the ESP posted no webhook and nobody counted anything."""
    probes = [p for p in store.whole[AnalyticsProbe] if isinstance(p, AnalyticsProbe)]  # by time
    hooks, sut_n = store.one(
        f"""SELECT count(*) FILTER (k = '{Kind.ESP_WEBHOOK}'), count(*) FILTER (k = '{Kind.SUT_EVENT}')
            FROM rec"""
    )
    if not hooks and not sut_n and not probes:
        return None
    try:
        store.con.execute(_EVENTS_SQL.format(hooks=store.kinds((EspWebhook,))))
        store.con.execute(_COUNTS_SQL.format(counted=store.kinds((SutEvent,))))
        return _analyze(store, probes, sut_n, t0_ns, windows, seconds)
    finally:
        store.con.execute(f"DROP TABLE IF EXISTS {_EVENTS}; DROP TABLE IF EXISTS {_COUNTS}")


def _per_kind(store: Store, sql: str) -> Counter:
    """A Counter of the (kind, count) rows of ``sql``."""
    return Counter({kind: int(n) for kind, n in store.rows(sql)})


def _analyze(
    store: Store, probes: list[AnalyticsProbe], sut_n: int, t0_ns: int, windows: list[Window], seconds: int
) -> Analytics:
    sut = f"(SELECT t, event, event_id FROM {store.kinds((SutEvent,))})"
    kinds = sorted(k for (k,) in store.rows(f"SELECT event FROM {_EVENTS} UNION SELECT event FROM {sut}"))
    probe_ok = [p for p in probes if p.ok and p.counts is not None]
    source = "probe" if probes else ("events" if sut_n else None)
    last_t = max(
        [t0_ns, *(p.t for p in probes)]
        + [t for (t,) in store.rows(f"SELECT max(first_t) FROM {_POSTED} UNION ALL SELECT max(t) FROM {sut}")
           if t is not None]
    )  # fmt: skip
    n_s = max(seconds, int((last_t - t0_ns) // _NS) + 1, 1)

    posted = store.value(f"SELECT count(*) FROM {_POSTED}")
    sent = _per_kind(store, f"SELECT event, count(*) FROM {_POSTED} GROUP BY event")
    acked = _per_kind(
        store, f"SELECT event, count(*) FROM {_POSTED} WHERE acked_t IS NOT NULL GROUP BY event"
    )
    dropped = _per_kind(
        store, f"SELECT event, count(*) FROM {_EVENTS} WHERE dropped AND first_t IS NULL GROUP BY event"
    )
    counted = missed = double = None
    why_not = None
    if source == "events":
        counted = _per_kind(store, f"SELECT event, count(*) FROM {sut} GROUP BY event")
        missed = _per_kind(
            store,
            f"""SELECT p.event, count(*) FROM {_POSTED} AS p LEFT JOIN {_COUNTS} AS c USING (event_id)
                WHERE c.n IS NULL GROUP BY p.event""",
        )
        # A count beyond the first of a posted event, or of an event never posted, under the SUT's kind;
        # each posted id's first count was no double (under the ESP's kind).
        double = _per_kind(
            store,
            f"""SELECT s.event, count(*) FROM {sut} AS s LEFT JOIN {_POSTED} AS p USING (event_id)
                LEFT JOIN {_COUNTS} AS c USING (event_id) WHERE p.event_id IS NULL OR c.n > 1
                GROUP BY s.event""",
        )
        double.subtract(
            _per_kind(
                store,
                f"""SELECT p.event, count(*) FROM {_POSTED} AS p JOIN {_COUNTS} AS c USING (event_id)
                    WHERE c.n > 1 GROUP BY p.event""",
            )
        )
    elif source == "probe":
        if probe_ok:
            last = next((p for p in reversed(probe_ok) if p.final), probe_ok[-1])
            counted = Counter({k: round(v) for k, v in (last.counts or {}).items()})
            kinds = sorted(set(kinds) | set(counted))
            missed = Counter({k: max(sent[k] - counted[k], 0) for k in kinds})
            double = Counter({k: max(counted[k] - sent[k], 0) for k in kinds})
        else:
            why_not = f"the analytics probe never answered ({len(probes)} polls)"
    else:
        why_not = "no analytics probe and no sut.event records: the SUT's counts are unknown"
    if not posted and why_not is None:
        why_not = "the ESP posted no webhook event: there was nothing to count"
    figures = _figures(sent, acked, dropped, counted, missed, double, kinds)

    series = _series(store, probes, source, t0_ns, n_s)
    wins = _windows(store, windows, source, series, t0_ns, n_s)
    probe = None
    if probes:
        failed = [p for p in probes if not p.ok]
        probe = {
            "url": probes[-1].url,
            "polls": len(probes),
            "failed": len(failed),
            "final": any(p.final and p.ok for p in probes),
            "last_error": failed[-1].error if failed else None,
        }
    return Analytics(source, source == "events", figures, wins, series, probe, why_not)


def _second(t: int, t0_ns: int, n_s: int) -> int:
    return min(max((t - t0_ns) // _NS, 0), n_s - 1)


def _cumulative(store: Store, times: str, t0_ns: int, n_s: int) -> list[int]:
    """Cumulative count per second of the times ``t`` of query ``times`` (clipped to the ``n_s``
    seconds from ``t0_ns``: earlier ones in the first, later ones in the last)."""
    got = store.numpy(
        f"""SELECT least(greatest((t - {int(t0_ns)}) // {_NS}, 0), {n_s - 1}) AS s, count(*) AS c
            FROM ({times}) WHERE t IS NOT NULL GROUP BY s"""
    )
    per = np.zeros(n_s, dtype=np.int64)
    per[got["s"].astype(np.int64)] = got["c"]
    return np.cumsum(per).tolist()


def _series(
    store: Store, probes: list[AnalyticsProbe], source: str | None, t0_ns: int, n_s: int
) -> dict[str, Any]:
    """Cumulative events per second: sent, acknowledged and counted (null: the probe got no answer in
    that second, so the SUT's count is not known then)."""
    sent = _cumulative(store, f"SELECT first_t AS t FROM {_POSTED}", t0_ns, n_s)
    acked = _cumulative(store, f"SELECT acked_t AS t FROM {_POSTED}", t0_ns, n_s)
    counted: list[int | None]
    if source == "events":
        counted = list(_cumulative(store, f"SELECT t FROM rec WHERE k = '{Kind.SUT_EVENT}'", t0_ns, n_s))
    elif source == "probe":
        counted = [None] * n_s
        for p in probes:  # the last answer in each second
            sec = _second(p.t, t0_ns, n_s)
            if p.ok and p.counts is not None:
                counted[sec] = round(sum(p.counts.values()))
    else:
        counted = [None] * n_s
    return {"sent": sent, "acknowledged": acked, "counted": counted}


def _windows(
    store: Store, windows: list[Window], source: str | None, series: dict[str, Any], t0_ns: int, n_s: int
) -> list[dict[str, Any]]:
    """Per fault window, the events first posted inside it and after it (until the next window opens),
    all windows in one query; and the gap."""
    if not windows:
        return []
    spans = []
    for k, w in enumerate(windows):
        start, end = t0_ns + int(w.start_s * _NS), t0_ns + int(w.end_s * _NS)
        until = t0_ns + int(windows[k + 1].start_s * _NS) if k + 1 < len(windows) else NEVER
        spans += [f"({k}, 'inside', {start}, {end})", f"({k}, 'after', {end}, {until})"]
    got = {
        (k, part): rest
        for k, part, *rest in store.rows(
            f"""SELECT w.k, w.part, count(*), count(p.acked_t), coalesce(sum(c.n), 0),
                count(*) FILTER (c.n IS NULL), coalesce(sum(greatest(c.n - 1, 0)), 0)
                FROM (VALUES {", ".join(spans)}) AS w(k, part, a, b)
                JOIN {_POSTED} AS p ON p.first_t >= w.a AND p.first_t < w.b
                LEFT JOIN {_COUNTS} AS c USING (event_id) GROUP BY w.k, w.part"""
        )
    }
    out = []
    for k, w in enumerate(windows):
        start, end = t0_ns + int(w.start_s * _NS), t0_ns + int(w.end_s * _NS)
        row: dict[str, Any] = {"name": w.name, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
        for part in ("inside", "after"):
            sent, acked, counted, missed, double = (int(x) for x in got.get((k, part), (0, 0, 0, 0, 0)))
            row[part] = _row(sent, acked, 0, counted if source == "events" else None, missed, double)
        # The gap: how far behind the posted events the SUT's count was, from the window's start to the
        # first second its count is known again at or after its end (what it said when it came back).
        counted_s = series["counted"]
        s0, s1 = _second(start, t0_ns, n_s), _second(max(end - 1, start), t0_ns, n_s)
        back = next((s for s in range(s1, n_s) if counted_s[s] is not None), s1)
        gaps = [series["sent"][s] - c for s in range(s0, back + 1) if (c := counted_s[s]) is not None]
        row["max_gap"] = max(gaps) if gaps else None
        row["blind_s"] = sum(counted_s[s] is None for s in range(s0, s1 + 1)) if source == "probe" else 0
        out.append(row)
    return out


def judge_analytics(slo: SloSpec, a: Analytics | None) -> list[SloResult]:
    """``max_analytics_error`` when set: every event kind's error within it (a count, a share of the
    kind's sent events, or both); it fails, naming why, when the accuracy cannot be judged."""
    limit = slo.max_analytics_error
    if limit is None:
        return []
    count, share = slo.analytics_limits()
    shown = " and ".join(x for x in (f"{count:g} events" if count is not None else "",
                                     f"{share * 100:g}%" if share is not None else "") if x)  # fmt: skip
    target = count if count is not None else share
    name = "max_analytics_error"
    if a is None or a.why_not is not None:
        why = a.why_not if a is not None else "the ESP posted no webhook event and the SUT counted nothing"
        return [SloResult(name, target, None, False, "events", f"analytics accuracy cannot be judged: {why}")]
    worst, worst_kind, breached = 0, None, []
    for kind, row in a.kinds.items():
        if kind == "total":
            continue
        err, ratio = row["error"], row["error_ratio"] or 0.0
        over = (count is not None and err > count) or (share is not None and ratio > share)
        if over:
            breached.append(f"{kind} {err:,} ({ratio * 100:.2f}% of {row['sent']:,})")
        if err > worst or worst_kind is None:
            worst, worst_kind = err, kind
    total = a.total
    how = "" if a.exact else " (from the SUT's counts: a miss and a double count cancel out)"
    if breached:
        detail = f"analytics error over the limit: {', '.join(breached)}, limit {shown}{how}"
    else:
        detail = (
            f"analytics error {total['error']:,} of {total['sent']:,} events "
            f"({total['missed']:,} missed, {total['double_counted']:,} double-counted), limit {shown}{how}"
        )
    return [SloResult(name, target, worst, not breached, "events", detail)]
