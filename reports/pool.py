"""A relay pool behind a load balancer (the ``pool`` target): what each member carried, and how fast the
balancer stopped sending to a member that died.

Read from the pool's own ledger (``pool.jsonl``: ``pool.member``, ``pool.server``, see
mailstorm.harness.targets.pool) and each member's ``sut.accepted`` records (the member's ledger source
``sut-mN``, or ``sut-mN-K`` for a member of several instances). Per member: messages it accepted and, of
those, delivered (first ESP acceptance), per second of the run and in all, and its ``share`` of what the
members accepted.

Per action that took a member down (``kill``, ``stop``, ``pause``/``sigstop`` with ``params: {member: N}``
on the timeline): ``ejected_after_s``, from the action's start to the first poll of HAProxy's stats
socket that showed the member ``DOWN`` or ``MAINT`` (None: the balancer never took it out; within the
poll interval, ``stats_interval_s``), ``back_after_s`` from then to the first poll that showed it ``UP``
again; in that gap (from the action to the ejection, or the end of the run) the submissions the SUT
refused or that failed (``refused_in_gap``, by when they ended) and the messages submitted in it that
were lost (``lost_in_gap``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mailstorm.ledger import (
    ChaosBegin,
    Kind,
    LedgerReader,
    PoolMember,
    PoolServer,
    decode,
    open_segment,
    segments,
    source_of,
)
from mailstorm.reports.fate import LOST, NEVER, Messages
from mailstorm.reports.ingest import Columns

_NS = 1_000_000_000
POOL_SOURCE = "pool"  # its ledger: pool.jsonl
DOWN_ACTIONS = frozenset({"kill", "stop", "pause", "sigstop", "disable"})
_OUT = ("DOWN", "MAINT")


@dataclass
class MemberFigures:
    member: int
    kind: str
    source: str
    address: str
    accepted: int
    delivered: int
    share: float | None
    accepted_per_s: list[int] = field(default_factory=list)
    delivered_per_s: list[int] = field(default_factory=list)


@dataclass
class Ejection:
    member: int
    action: str
    name: str
    at_s: float
    ejected_after_s: float | None
    back_after_s: float | None
    refused_in_gap: int
    lost_in_gap: int


@dataclass
class Pool:
    members: list[MemberFigures]
    ejections: list[Ejection]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pool_figures(ledger_dir: Path, cols: Columns, msgs: Messages, t0_ns: int, n: int) -> Pool | None:
    """The pool's figures; None when the run's target was no pool (there is no pool ledger)."""
    paths = [p for p in segments(ledger_dir) if source_of(p) == POOL_SOURCE]
    if not paths:
        return None
    members: list[PoolMember] = []
    servers: list[PoolServer] = []
    for path in paths:
        with open_segment(path) as fh:
            lines = list(fh)
        for raw in lines:
            try:
                rec = decode(raw)
            except Exception:  # a torn last line: the ingest counts those
                continue
            if isinstance(rec, PoolMember):
                members.append(rec)
            elif isinstance(rec, PoolServer):
                servers.append(rec)
    index = {cid: i for i, cid in enumerate(cols.ids)}
    esp = cols.table(Kind.ESP_ACCEPTED)
    first_esp = np.full(len(cols.ids) + 1, NEVER, dtype=np.int64)
    known = esp["id"] >= 0
    np.minimum.at(first_esp, esp["id"][known], esp["t"][known])
    reader = LedgerReader(ledger_dir)
    figures = []
    for m in sorted(members, key=lambda m: m.member):
        took: dict[int, int] = {}  # interned id -> when this member accepted it (first time)
        for f in reader.files():
            if (src := source_of(f)) == m.source or src.startswith(f"{m.source}-"):
                for r in reader.iter_file(f, [Kind.SUT_ACCEPTED]):
                    i = index.get(r.get("id"))
                    if i is not None and isinstance(r.get("t"), int):
                        took[i] = min(took.get(i, r["t"]), r["t"])
        ids = np.fromiter(took, dtype=np.int64, count=len(took))
        at = np.fromiter(took.values(), dtype=np.int64, count=len(took))
        done = first_esp[ids] if len(ids) else np.zeros(0, dtype=np.int64)
        done = done[done != NEVER]
        figures.append(
            MemberFigures(
                member=m.member,
                kind=m.target,
                source=m.source,
                address=m.address,
                accepted=len(ids),
                delivered=len(done),
                share=None,
                accepted_per_s=_per_second(at, t0_ns, n),
                delivered_per_s=_per_second(done, t0_ns, n),
            )
        )
    total = sum(f.accepted for f in figures)
    for f in figures:
        f.share = round(f.accepted / total, 4) if total else None
    return Pool(figures, _ejections(cols, msgs, servers, t0_ns))


def _per_second(times: np.ndarray, t0_ns: int, n: int) -> list[int]:
    s = (times - t0_ns) // _NS
    s = s[(s >= 0) & (s < n)]
    return np.bincount(s, minlength=n)[:n].tolist()


def _ejections(cols: Columns, msgs: Messages, servers: list[PoolServer], t0_ns: int) -> list[Ejection]:
    sub = cols.table(Kind.LOAD_SUBMIT)
    failed_at = sub["t"][~sub["ok"] & ~sub["phase"]]  # refused or failed, not the generator's own stop
    end_ns = int(max([r.t for r in cols.timeline] + [t0_ns]))
    out = []
    for rec in cols.timeline:
        if not isinstance(rec, ChaosBegin) or rec.what != "target" or not isinstance(rec.params, dict):
            continue
        action, params = rec.params.get("action"), rec.params.get("params") or {}
        member = params.get("member")
        if action not in DOWN_ACTIONS or isinstance(member, bool) or not isinstance(member, int):
            continue
        mine = [s for s in servers if s.member == member and s.t >= rec.t]
        out_at = next((s.t for s in mine if s.status.startswith(_OUT)), None)
        back_at = next((s.t for s in mine if out_at is not None and s.t > out_at and s.status == "UP"), None)
        gap_end = out_at if out_at is not None else end_ns
        in_gap = (msgs.intended >= rec.t) & (msgs.intended <= gap_end)
        out.append(
            Ejection(
                member=member,
                action=action,
                name=rec.name,
                at_s=round((rec.t - t0_ns) / _NS, 3),
                ejected_after_s=None if out_at is None else round((out_at - rec.t) / _NS, 3),
                back_after_s=None if back_at is None else round((back_at - out_at) / _NS, 3),
                refused_in_gap=int(((failed_at >= rec.t) & (failed_at <= gap_end)).sum()),
                lost_in_gap=int((in_gap & (msgs.outcome == LOST)).sum()),
            )
        )
    return out
