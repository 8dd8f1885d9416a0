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
  first acceptance through X again after it (None: it never happened in the run); two acceptances at
  the same ns through different ESPs: the one earlier in the run's order is the first;
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
    run_i = f"CASE esp_i {run_i} END"
    counted = dict(store.rows(f"SELECT esp_i, count(*) FROM rec WHERE {_ACCEPTED} GROUP BY esp_i"))
    accepted = {n: int(counted.get(store.esps.index(n), 0)) for n in names}
    got = store.numpy(
        f"""SELECT greatest((t - {t0}) // {_NS}, 0) AS s, {run_i} AS e, count(*) AS c FROM rec
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
    windows = _windows(store.timeline, names[0])
    faults = [_one(store, name, on, start, end, names, run_i, t0) for name, on, start, end in windows]
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


def _one(
    store: Store, name: str, on: str, start: int, end: int | None, names: list[str], run_i: str, t0: int
) -> FaultFailover:
    index = store.esps.index(on) if on in store.esps else -1  # file order, as the rows' esp_i
    failover_s = via = None
    first = store.one(
        f"""SELECT t, {run_i} FROM rec WHERE {_ACCEPTED} AND esp_i >= 0 AND esp_i != $1 AND t >= $2
            ORDER BY t, {run_i} LIMIT 1""",
        [index, start],
    )
    if first is not None:
        failover_s, via = round((int(first[0]) - start) / _NS, 3), names[int(first[1])]
    failback_s = None
    if end is not None:
        back = store.value(
            f"SELECT min(t) FROM rec WHERE {_ACCEPTED} AND esp_i = $1 AND t >= $2", [index, end]
        )
        if back is not None:
            failback_s = round((int(back) - end) / _NS, 3)
    return FaultFailover(
        name=name,
        esp=on,
        start_s=round((start - t0) / _NS, 3),
        end_s=None if end is None else round((end - t0) / _NS, 3),
        failover_s=failover_s,
        failback_s=failback_s,
        via=via,
    )
