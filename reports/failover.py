"""Several ESPs in one run: which ESP took the mail when, and how fast the SUT moved between them.

Read from the ESPs' own ledgers (``esp.accepted`` rows carry the ESP whose file they are in:
``mailstorm.reports.ingest``) and the timeline's ``chaos.begin``/``chaos.end`` (which name the ESP a
step acted on; none: the first). Only a run whose ledgers hold more than one ESP gets these figures.

- ``shares``: per second from the run's start, the acceptances per ESP (the per-second shares are these
  over their sum);
- per ESP fault (an ``esp_fault`` or ``esp_outage`` window on ESP X, or a ``network`` window whose step
  named ESP X: the chaos proxy on X's paths alone): ``failover_s``, from the fault's
  start to the first acceptance through any other ESP after it, and ``failback_s``, from its end to the
  first acceptance through X again after it (None: it never happened in the run);
- ``both``: messages that more than one ESP accepted. The fate module counts them ``duplicated`` (it
  takes acceptances from every ESP's ledger alike); this says how many of the duplicates crossed ESPs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mailstorm.ledger import ChaosBegin, ChaosEnd, Kind, Record
from mailstorm.reports.ingest import Columns

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


def failover(cols: Columns, t0: int, order: list[str] | None = None) -> Failover | None:
    """The figures above; None when the ledgers hold one ESP or none. ``order``: the ESP names in the
    run's order (run.json), the first being the SUT's primary; else their files' order."""
    names = [n for n in (order or []) if n in cols.esps] + [n for n in cols.esps if n not in (order or [])]
    if len(names) < 2:
        return None
    acc = cols.table(Kind.ESP_ACCEPTED)
    # Re-index the rows' ESP from file order to the run's order.
    remap = np.array([names.index(n) for n in cols.esps] + [-1], dtype=np.int64)
    esp = remap[acc["esp"]] if len(acc) else np.zeros(0, dtype=np.int64)
    t = acc["t"]
    ok = esp >= 0
    accepted = {n: int((esp == i).sum()) for i, n in enumerate(names)}
    shares: list[dict[str, int]] = []
    if ok.any():
        sec = np.maximum((t[ok] - t0) // _NS, 0)
        grid = np.zeros((int(sec.max()) + 1, len(names)), dtype=np.int64)
        np.add.at(grid, (sec, esp[ok]), 1)
        shares = [{n: int(row[i]) for i, n in enumerate(names)} for row in grid]
    ids = acc["id"]
    known = ok & (ids >= 0)
    both = 0
    if known.any():
        pairs = np.unique(np.stack([ids[known], esp[known]]), axis=1)  # each (message, ESP) once
        both = int((np.bincount(pairs[0]) > 1).sum())
    windows = _windows(cols.timeline, names[0])
    faults = [_one(name, on, start, end, t, esp, names, t0) for name, on, start, end in windows]
    return Failover(names, accepted, shares, faults, both)


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
    name: str, on: str, start: int, end: int | None, t: np.ndarray, esp: np.ndarray, names: list[str], t0: int
) -> FaultFailover:
    index = names.index(on) if on in names else -1
    elsewhere = (esp >= 0) & (esp != index) & (t >= start)
    failover_s = via = None
    if elsewhere.any():
        first = int(np.argmin(np.where(elsewhere, t, np.iinfo(np.int64).max)))
        failover_s, via = round((int(t[first]) - start) / _NS, 3), names[int(esp[first])]
    failback_s = None
    if end is not None:
        back = (esp == index) & (t >= end)
        if back.any():
            failback_s = round((int(t[back].min()) - end) / _NS, 3)
    return FaultFailover(
        name=name,
        esp=on,
        start_s=round((start - t0) / _NS, 3),
        end_s=None if end is None else round((end - t0) / _NS, 3),
        failover_s=failover_s,
        failback_s=failback_s,
        via=via,
    )
