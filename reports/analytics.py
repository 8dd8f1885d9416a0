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

One pass over the ledgers reads only the lines it needs (esp.webhook, sut.event, analytics.probe).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailstorm.ledger import AnalyticsProbe, EspWebhook, SutEvent
from mailstorm.reports.ingest import scan
from mailstorm.reports.recovery import Window
from mailstorm.reports.slo import SloResult
from mailstorm.reports.spec import SloSpec

_NS = 1_000_000_000
_WANTED = (b'"k":"esp.webhook"', b'"k":"sut.event"', b'"k":"analytics.probe"')
NEVER = 2**63 - 1


@dataclass
class _Posted:
    event: str
    first_t: int = NEVER  # the first attempt's record (ns)
    acked_t: int = NEVER  # the first 2xx answer's record (ns)
    dropped: bool = False


@dataclass
class Raw:
    """What the ledgers say: every event the ESP made, the SUT's counts, its analytics polls."""

    events: dict[str, _Posted] = field(default_factory=dict)
    sut: list[SutEvent] = field(default_factory=list)
    probes: list[AnalyticsProbe] = field(default_factory=list)


def read(ledger_dir: Path) -> Raw:
    raw = Raw()
    for rec in scan(ledger_dir, _WANTED):
        if isinstance(rec, EspWebhook):
            ev = raw.events.get(rec.event_id)
            if ev is None:
                ev = raw.events[rec.event_id] = _Posted(rec.event)
            if rec.attempt == 0:
                ev.dropped = True
                continue
            ev.first_t = min(ev.first_t, rec.t)
            if rec.ok:
                ev.acked_t = min(ev.acked_t, rec.t)
        elif isinstance(rec, SutEvent):
            raw.sut.append(rec)
        elif isinstance(rec, AnalyticsProbe):
            raw.probes.append(rec)
    raw.probes.sort(key=lambda r: r.t)
    return raw


def _figures(sent: Counter, acked: Counter, dropped: Counter, counted: Counter | None,
             missed: Counter | None, double: Counter | None, kinds: list[str]) -> dict[str, Any]:  # fmt: skip
    """Per kind and in total; ``counted`` None: the SUT's count is unknown here."""
    out: dict[str, Any] = {}
    for kind in [*kinds, "total"]:
        pick = lambda c, k=kind: sum(c.values()) if k == "total" else c.get(k, 0)  # noqa: E731
        n = pick(sent)
        row = {"sent": n, "acknowledged": pick(acked), "not_posted": pick(dropped)}
        if counted is None or missed is None or double is None:
            row |= {
                "counted": None,
                "missed": None,
                "double_counted": None,
                "error": None,
                "error_ratio": None,
            }
        else:
            m, d = pick(missed), pick(double)
            row |= {"counted": pick(counted), "missed": m, "double_counted": d, "error": m + d,
                    "error_ratio": round((m + d) / n, 6) if n else None}  # fmt: skip
        out[kind] = row
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


def analyze(ledger_dir: Path, t0_ns: int, windows: list[Window], seconds: int) -> Analytics | None:
    """The run's analytics figures; None when the ESP posted no webhook and nobody counted anything."""
    raw = read(ledger_dir)
    if not raw.events and not raw.sut and not raw.probes:
        return None
    posted = {eid: ev for eid, ev in raw.events.items() if ev.first_t != NEVER}
    kinds = sorted({ev.event for ev in raw.events.values()} | {s.event for s in raw.sut})
    probe_ok = [p for p in raw.probes if p.ok and p.counts is not None]
    source = "probe" if raw.probes else ("events" if raw.sut else None)
    last_t = max([ev.first_t for ev in posted.values()] + [p.t for p in raw.probes] + [s.t for s in raw.sut]
                 + [t0_ns])  # fmt: skip
    n_s = max(seconds, int((last_t - t0_ns) // _NS) + 1, 1)

    sent = Counter(ev.event for ev in posted.values())
    acked = Counter(ev.event for ev in posted.values() if ev.acked_t != NEVER)
    dropped = Counter(ev.event for eid, ev in raw.events.items() if ev.dropped and eid not in posted)
    per_id = Counter(s.event_id for s in raw.sut)
    counted = missed = double = None
    why_not = None
    if source == "events":
        counted = Counter(s.event for s in raw.sut)
        missed = Counter(ev.event for eid, ev in posted.items() if per_id[eid] == 0)
        double = Counter()
        for s in raw.sut:  # a count beyond the first of a posted event, or of an event never posted
            if s.event_id not in posted or per_id[s.event_id] > 1:
                double[s.event] += 1
        for eid, n in per_id.items():
            if eid in posted and n > 1:
                double[posted[eid].event] -= 1  # each id's first count was no double
    elif source == "probe":
        if probe_ok:
            last = next((p for p in reversed(probe_ok) if p.final), probe_ok[-1])
            counted = Counter({k: round(v) for k, v in (last.counts or {}).items()})
            kinds = sorted(set(kinds) | set(counted))
            missed = Counter({k: max(sent[k] - counted[k], 0) for k in kinds})
            double = Counter({k: max(counted[k] - sent[k], 0) for k in kinds})
        else:
            why_not = f"the analytics probe never answered ({len(raw.probes)} polls)"
    else:
        why_not = "no analytics probe and no sut.event records: the SUT's counts are unknown"
    if not posted and why_not is None:
        why_not = "the ESP posted no webhook event: there was nothing to count"
    figures = _figures(sent, acked, dropped, counted, missed, double, kinds)

    series = _series(posted, raw, source, t0_ns, n_s)
    wins = _windows(windows, posted, per_id, source, series, t0_ns, n_s, kinds)
    probe = None
    if raw.probes:
        failed = [p for p in raw.probes if not p.ok]
        probe = {
            "url": raw.probes[-1].url,
            "polls": len(raw.probes),
            "failed": len(failed),
            "final": any(p.final and p.ok for p in raw.probes),
            "last_error": failed[-1].error if failed else None,
        }
    return Analytics(source, source == "events", figures, wins, series, probe, why_not)


def _second(t: int, t0_ns: int, n_s: int) -> int:
    return min(max((t - t0_ns) // _NS, 0), n_s - 1)


def _cumulative(times: list[int], t0_ns: int, n_s: int) -> list[int]:
    per = [0] * n_s
    for t in times:
        per[_second(t, t0_ns, n_s)] += 1
    total, out = 0, []
    for x in per:
        total += x
        out.append(total)
    return out


def _series(posted: dict[str, _Posted], raw: Raw, source: str | None, t0_ns: int, n_s: int) -> dict[str, Any]:
    """Cumulative events per second: sent, acknowledged and counted (null: the probe got no answer in
    that second, so the SUT's count is not known then)."""
    sent = _cumulative([ev.first_t for ev in posted.values()], t0_ns, n_s)
    acked = _cumulative([ev.acked_t for ev in posted.values() if ev.acked_t != NEVER], t0_ns, n_s)
    counted: list[int | None]
    if source == "events":
        counted = list(_cumulative([s.t for s in raw.sut], t0_ns, n_s))
    elif source == "probe":
        counted = [None] * n_s
        for p in raw.probes:  # the last answer in each second
            sec = _second(p.t, t0_ns, n_s)
            if p.ok and p.counts is not None:
                counted[sec] = round(sum(p.counts.values()))
    else:
        counted = [None] * n_s
    return {"sent": sent, "acknowledged": acked, "counted": counted}


def _windows(
    windows: list[Window], posted: dict[str, _Posted], per_id: Counter, source: str | None,
    series: dict[str, Any], t0_ns: int, n_s: int, kinds: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    out = []
    for k, w in enumerate(windows):
        start, end = t0_ns + int(w.start_s * _NS), t0_ns + int(w.end_s * _NS)
        until = t0_ns + int(windows[k + 1].start_s * _NS) if k + 1 < len(windows) else NEVER
        spans = {"inside": (start, end), "after": (end, until)}
        row: dict[str, Any] = {"name": w.name, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3)}
        for part, (a, b) in spans.items():
            evs = {eid: ev for eid, ev in posted.items() if a <= ev.first_t < b}
            sent = Counter(ev.event for ev in evs.values())
            acked = Counter(ev.event for ev in evs.values() if ev.acked_t != NEVER)
            counted = missed = double = None
            if source == "events":
                counted = Counter()
                missed, double = Counter(), Counter()
                for eid, ev in evs.items():
                    counted[ev.event] += per_id[eid]
                    missed[ev.event] += per_id[eid] == 0
                    double[ev.event] += max(per_id[eid] - 1, 0)
            row[part] = _figures(sent, acked, Counter(), counted, missed, double, kinds)["total"]
        # The gap: how far behind the posted events the SUT's count was, from the window's start to the
        # first second its count is known again at or after its end (what it said when it came back).
        counted = series["counted"]
        s0, s1 = _second(start, t0_ns, n_s), _second(max(end - 1, start), t0_ns, n_s)
        back = next((s for s in range(s1, n_s) if counted[s] is not None), s1)
        gaps = [series["sent"][s] - c for s in range(s0, back + 1) if (c := counted[s]) is not None]
        row["max_gap"] = max(gaps) if gaps else None
        row["blind_s"] = sum(counted[s] is None for s in range(s0, s1 + 1)) if source == "probe" else 0
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
