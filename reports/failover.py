"""Several ESPs in one run: which ESP took the mail when, and how fast the SUT moved between them.

Read from the ESPs' own ledgers (``esp.accepted`` rows carry the ESP whose file they are in: the
store's ``esp_i``; a campaign's acceptances are not the load's and are left out) and the timeline's
``chaos.begin``/``chaos.end`` (which name the ESP a step acted on; none: the first). Only a run whose
ledgers hold more than one ESP gets these figures.

- ``shares``: per second from the run's start, the acceptances per ESP (the per-second shares are these
  over their sum);
- per ESP fault (an ``esp_fault`` or ``esp_outage`` window on ESP X, or a ``network`` window whose step
  named ESP X: the chaos proxy on X's paths alone): ``failover_s``, from the fault's
  start to the first acceptance through any other ESP after it, and ``failback_s``, from its end to the
  first acceptance through X again after it (None: it never happened in the run); of two acceptances
  at the same ns through different ESPs, the one of the ESP whose files come first is the first. Every
  window in one query (an as-of join per window and ESP), however many windows;
- ``both``: messages that more than one ESP accepted. The fate module counts them ``duplicated`` (it
  takes acceptances from every ESP's ledger alike); this says how many of the duplicates crossed ESPs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mailstorm.ledger import ChaosBegin, ChaosEnd, Kind, Record
from mailstorm.reports.store import Store

_NS = 1_000_000_000
ESP_STEPS = ("esp_fault", "esp_outage")


@dataclass
class FaultFailover:
    """One ESP fault window and how the SUT moved away from the ESP and back."""

    name: str
    esp: str
    start_s: float
    end_s: float | None
    failover_s: float | None
    failback_s: float | None
    via: str | None  # the ESP the first delivery elsewhere went through

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Failover:
    esps: list[str]
    accepted: dict[str, int]
    shares: list[dict[str, int]]  # per second from the run's start: {esp: acceptances}
    faults: list[FaultFailover]
    both: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "esps": self.esps,
            "accepted": self.accepted,
            "delivered_by_several": self.both,
            "faults": [f.as_dict() for f in self.faults],
            "shares_per_s": self.shares,
        }


_ACCEPTED = f"k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL"


def failover(store: Store, t0: int, order: list[str] | None = None) -> Failover | None:
    """The figures above; None when the ledgers hold one ESP or none. ``order``: the ESP names in the
    run's order (run.json), the first being the SUT's primary; else their files' order."""
    names = [n for n in (order or []) if n in store.esps] + [n for n in store.esps if n not in (order or [])]
    if len(names) < 2:
        return None
    # The rows' ESP is in file order (store.esps); the figures' in the run's.
    run_i = " ".join(f"WHEN {store.esps.index(n)} THEN {i}" for i, n in enumerate(names))
    counted = dict(store.rows(f"SELECT esp_i, count(*) FROM rec WHERE {_ACCEPTED} GROUP BY esp_i"))
    accepted = {n: int(counted.get(store.esps.index(n), 0)) for n in names}
    got = store.numpy(
        f"""SELECT greatest((t - {t0}) // {_NS}, 0) AS s, CASE esp_i {run_i} END AS e, count(*) AS c FROM rec
            WHERE {_ACCEPTED} AND esp_i >= 0 AND t IS NOT NULL GROUP BY ALL"""
    )
    shares: list[dict[str, int]] = []
    if len(got["s"]):
        sec, esp = got["s"].astype(np.int64), got["e"].astype(np.int64)
        grid = np.zeros((int(sec.max()) + 1, len(names)), dtype=np.int64)
        np.add.at(grid, (sec, esp), got["c"].astype(np.int64))
        shares = [{n: int(row[i]) for i, n in enumerate(names)} for row in grid]
    both = store.value(
        f"""SELECT count(*) FROM (SELECT id FROM rec WHERE {_ACCEPTED} AND esp_i >= 0 AND id IS NOT NULL
            GROUP BY id HAVING count(DISTINCT esp_i) > 1)"""
    )
    faults = _faults(store, _windows(store.timeline, names[0]), t0)
    return Failover(names, accepted, shares, faults, int(both))


def _windows(timeline: list[Record], first: str) -> list[tuple[str, str, int, int | None]]:
    """(name, esp, start ns, end ns or None) of every ESP fault step, in start order."""
    begins: dict[str, ChaosBegin] = {}
    out: list[tuple[str, str, int, int | None]] = []
    for rec in timeline:
        if isinstance(rec, ChaosBegin) and (rec.what in ESP_STEPS or (rec.what == "network" and rec.esp)):
            begins[rec.name] = rec
        elif isinstance(rec, ChaosEnd) and rec.name in begins:
            b = begins.pop(rec.name)
            out.append((b.name, b.esp or first, b.t, rec.t))
    out += [(b.name, b.esp or first, b.t, None) for b in begins.values()]
    return sorted(out, key=lambda w: w[2])


def _faults(store: Store, windows: list[tuple[str, str, int, int | None]], t0: int) -> list[FaultFailover]:
    """Each window's failover (the first acceptance through another ESP from its start) and failback
    (the first through its own ESP from its end)."""
    if not windows:
        return []
    # Its ESP as the rows' esp_i (-1: an ESP the ledgers do not hold).
    index = [store.esps.index(on) if on in store.esps else -1 for _, on, _, _ in windows]
    rows = ", ".join(
        f"({i}, {start}, {'NULL' if end is None else end}, {e})"
        for i, ((_, _, start, end), e) in enumerate(zip(windows, index, strict=True))
    )
    esps = ", ".join(f"({e})" for e in range(len(store.esps)))
    got = {
        i: (t, e, back)
        for i, t, e, back in store.rows(
            f"""WITH w(i, start, fin, own) AS (VALUES {rows}),
            acc AS (SELECT t, esp_i FROM rec WHERE {_ACCEPTED} AND t IS NOT NULL),
            other AS (SELECT w.i, w.start, e.e FROM w CROSS JOIN (VALUES {esps}) e(e) WHERE e.e != w.own),
            away AS (SELECT other.i, acc.t, acc.esp_i FROM other
                ASOF JOIN acc ON other.e = acc.esp_i AND other.start <= acc.t
                QUALIFY row_number() OVER (PARTITION BY other.i ORDER BY acc.t, acc.esp_i) = 1),
            back AS (SELECT w.i, acc.t FROM w ASOF JOIN acc ON w.own = acc.esp_i AND w.fin <= acc.t)
            SELECT w.i, away.t, away.esp_i, back.t FROM w LEFT JOIN away USING (i) LEFT JOIN back USING (i)"""
        )
    }
    out = []
    for i, (name, on, start, end) in enumerate(windows):
        first, via, back = got[i]
        out.append(
            FaultFailover(
                name=name,
                esp=on,
                start_s=round((start - t0) / _NS, 3),
                end_s=None if end is None else round((end - t0) / _NS, 3),
                failover_s=None if first is None else round((first - start) / _NS, 3),
                failback_s=None if back is None else round((back - end) / _NS, 3),
                via=None if via is None else store.esps[via],
            )
        )
    return out
