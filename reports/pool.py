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
from typing import Any

import numpy as np

from mailstorm.ledger import ChaosBegin, Kind, PoolMember, PoolServer, source_of
from mailstorm.reports.effects import FAILED_SUBMISSION
from mailstorm.reports.fate import LOST
from mailstorm.reports.store import Store

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


def pool_figures(store: Store, t0_ns: int, n: int) -> Pool | None:
    """The pool's figures; None when the run's target was no pool (there is no pool ledger)."""
    if not any(source_of(p) == POOL_SOURCE for p in store.paths):
        return None
    members = sorted((m for m in store.whole[PoolMember] if isinstance(m, PoolMember)), key=_member)
    servers = [s for s in store.whole[PoolServer] if isinstance(s, PoolServer)]
    accepted, delivered, at, done = _carried(store, members, t0_ns, n)
    figures = [
        MemberFigures(
            member=m.member,
            kind=m.target,
            source=m.source,
            address=m.address,
            accepted=int(accepted[i]),
            delivered=int(delivered[i]),
            share=None,
            accepted_per_s=at[i].tolist(),
            delivered_per_s=done[i].tolist(),
        )
        for i, m in enumerate(members)
    ]
    total = sum(f.accepted for f in figures)
    for f in figures:
        f.share = round(f.accepted / total, 4) if total else None
    return Pool(figures, _ejections(store, servers, t0_ns))


def _member(m: PoolMember) -> int:
    return m.member


def _carried(
    store: Store, members: list[PoolMember], t0_ns: int, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per member (in ``members``' order): the messages it accepted (its sut.accepted, from its own
    ledger files), how many of those the ESP accepted, and both per second from ``t0_ns`` (the member's
    first acceptance of each, the ESP's first acceptance of each) as a members x ``n`` array."""
    accepted, delivered = np.zeros(len(members), np.int64), np.zeros(len(members), np.int64)
    at, done = np.zeros((len(members), max(n, 0)), np.int64), np.zeros((len(members), max(n, 0)), np.int64)
    pairs = [
        (f, i)
        for f, path in enumerate(store.paths)
        for i, m in enumerate(members)
        if (src := source_of(path)) == m.source or src.startswith(f"{m.source}-")
    ]
    if not pairs:
        return accepted, delivered, at, done
    values = ", ".join(f"({f}, {i})" for f, i in pairs)
    got = store.numpy(
        f"""WITH mine(f, m) AS (VALUES {values}),
        took AS (SELECT m, id, min(t) AS t FROM rec JOIN mine USING (f)
            WHERE k = '{Kind.SUT_ACCEPTED}' AND id IS NOT NULL AND t IS NOT NULL GROUP BY m, id),
        esp AS (SELECT id, min(t) AS t FROM rec
            WHERE k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL AND id IN (SELECT id FROM took) GROUP BY id),
        carried AS (SELECT m, took.t AS t, esp.t AS done FROM took LEFT JOIN esp USING (id))
        SELECT m, 0 AS which, (t - {t0_ns}) // {_NS} AS s, count(*) AS c FROM carried GROUP BY ALL
        UNION ALL
        SELECT m, 1, (done - {t0_ns}) // {_NS}, count(*) FROM carried WHERE done IS NOT NULL GROUP BY ALL"""
    )
    m, which, s, c = (got[k].astype(np.int64) for k in ("m", "which", "s", "c"))
    np.add.at(accepted, m[which == 0], c[which == 0])
    np.add.at(delivered, m[which == 1], c[which == 1])
    inside = (s >= 0) & (s < n)
    for grid, w in ((at, 0), (done, 1)):
        pick = inside & (which == w)
        np.add.at(grid, (m[pick], s[pick]), c[pick])
    return accepted, delivered, at, done


def _ejections(store: Store, servers: list[PoolServer], t0_ns: int) -> list[Ejection]:
    end_ns = int(max([r.t for r in store.timeline] + [t0_ns]))
    out = []
    for rec in store.timeline:
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
        # In the gap: submissions refused or failed, by when they ended; messages submitted (intended) in
        # it that were lost.
        refused, lost = store.one(
            f"""SELECT (SELECT count(*) FROM rec WHERE {FAILED_SUBMISSION} AND t >= $1 AND t <= $2),
                (SELECT count(*) FROM msg WHERE intended >= $1 AND intended <= $2 AND outcome = {LOST})""",
            [rec.t, gap_end],
        )
        out.append(
            Ejection(
                member=member,
                action=action,
                name=rec.name,
                at_s=round((rec.t - t0_ns) / _NS, 3),
                ejected_after_s=None if out_at is None else round((out_at - rec.t) / _NS, 3),
                back_after_s=None if back_at is None else round((back_at - out_at) / _NS, 3),
                refused_in_gap=int(refused),
                lost_in_gap=int(lost),
            )
        )
    return out
