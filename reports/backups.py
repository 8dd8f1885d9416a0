"""Restores from backup: what each ``restore`` on the timeline lost (RPO), sent twice and took (RTO).

The timeline's target steps ``snapshot`` and ``restore`` (mailstorm.harness.snapshots) are read from
their ``chaos.begin`` records: a snapshot is taken at its step's begin (the SUT's state from then on is
what it copies; a message accepted a moment later that the copy still holds is restored and delivered,
so it never counts), a restore uses the latest earlier snapshot of its name. Per restore:

``rpo_messages``  messages the SUT accepted after that snapshot and no later than the restore's start
                  that never left it (neither reached the ESP nor bounced; their fate is ``lost``, or
                  ``pending`` when a deferral of theirs was recorded before the wipe): what the
                  restored state no longer held. ``rpo_ids`` lists them (the first ``IDS_SHOWN`` in
                  the order the SUT took them; ties by intended time, then id),
                  ``rpo_s`` is their span (first to last acceptance, s); ``snapshot_age_s`` the time
                  from the snapshot to the restore.
``duplicates``    messages the ESP accepted after the snapshot and before the restore, and again after
                  it: the restored state still held them as unsent and sent them again.
``rto_s``         from the restore's start to the first recovered second, by the recovery rules of
                  mailstorm.reports.recovery applied to the restore's own window (None: never recovered).

SLOs (``SloSpec``): ``max_rpo_messages`` and ``max_rto_s``, judged on the worst restore; a restore that
failed, or never recovered, fails them; a run with no restore passes them and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mailstorm.ledger import Action, ChaosBegin, Kind, Record
from mailstorm.reports.fate import NEVER
from mailstorm.reports.recovery import Recovery
from mailstorm.reports.slo import SloResult
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import Store

_NS = 1_000_000_000
IDS_SHOWN = 1000  # ids of RPO messages listed per restore (the count is always whole)
_SNAPSHOT, _RESTORE = "snapshot", "restore"
_DEFAULT_NAME = "default"  # as mailstorm.harness.snapshots names a snapshot given without one


@dataclass
class Restore:
    name: str  # the restore step's window name
    snapshot: str
    snapshot_s: float | None  # when that snapshot was taken (None: it never was)
    restore_s: float
    ok: bool  # the restore action succeeded
    detail: str
    snapshot_age_s: float | None
    rpo_messages: int
    rpo_s: float | None
    rpo_ids: list[str]
    duplicates: int
    rto_s: float | None
    recovered: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def restores(store: Store, recs: list[Recovery], t0_ns: int) -> list[Restore]:
    """One ``Restore`` per restore step on the timeline, in time order."""
    taken: dict[str, int] = {}  # snapshot name -> when its latest copy was taken (ns)
    actions = [r for r in store.timeline if isinstance(r, Action) and r.what == _RESTORE]
    by_window = {r.name: r for r in recs}
    out = []
    for rec in sorted(_steps(store.timeline), key=lambda r: r.t):
        action, params = rec.params.get("action"), rec.params.get("params") or {}
        name = str(params.get("name", _DEFAULT_NAME))
        if action == _SNAPSHOT:
            taken[name] = rec.t
        elif action == _RESTORE:
            done = next((a for a in actions if a.started >= rec.t), None)
            out.append(_restore(rec, name, taken.get(name), done, store, by_window.get(rec.name), t0_ns))
    return out


def _steps(timeline: list[Record]) -> list[ChaosBegin]:
    return [
        r for r in timeline if isinstance(r, ChaosBegin) and r.what == "target" and isinstance(r.params, dict)
    ]


# Messages the SUT took in (lo, at] that never left it (no ESP acceptance, no bounce): lost, or "pending"
# on the strength of a deferral the wiped state no longer remembers; one the SUT still listed at the end
# (sut.held) is not gone.
_GONE = f"""FROM msg WHERE left_at = {NEVER} AND sut_in > $1 AND sut_in <= $2
    AND id NOT IN (SELECT id FROM rec WHERE k = '{Kind.SUT_HELD}' AND id IS NOT NULL)"""
# Ids the ESP accepted in (lo, at] and again after ``at``: the restored state sent them twice.
_TWICE = f"""SELECT count(*) FROM (SELECT id FROM rec
    WHERE k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL AND id IS NOT NULL AND t > $1 GROUP BY id
    HAVING bool_or(t <= $2) AND bool_or(t > $2))"""


def _restore(
    rec: ChaosBegin,
    name: str,
    snap_ns: int | None,
    done: Action | None,
    store: Store,
    window: Recovery | None,
    t0_ns: int,
) -> Restore:
    at = rec.t
    lo = snap_ns if snap_ns is not None else at  # no snapshot: nothing can be said to be lost by it
    bounds = [lo, at]
    gone, first, last = store.one(f"SELECT count(*), min(sut_in), max(sut_in) {_GONE}", bounds)
    ids = store.rows(f"SELECT id {_GONE} ORDER BY sut_in, intended, id LIMIT {IDS_SHOWN}", bounds)
    rto = None
    if window is not None and window.recovered and window.time_to_recover_s is not None:
        rto = round(window.end_s - window.start_s + window.time_to_recover_s, 3)
    return Restore(
        name=rec.name or "restore",
        snapshot=name,
        snapshot_s=None if snap_ns is None else round((snap_ns - t0_ns) / _NS, 3),
        restore_s=round((at - t0_ns) / _NS, 3),
        ok=done is not None and done.ok,
        detail=done.detail if done is not None else "no action record: the restore never ran",
        snapshot_age_s=None if snap_ns is None else round((at - snap_ns) / _NS, 3),
        rpo_messages=int(gone),
        rpo_s=round(float(last - first) / _NS, 3) if gone else None,
        rpo_ids=[i for (i,) in ids],
        duplicates=int(store.value(_TWICE, bounds)),
        rto_s=rto,
        recovered=rto is not None,
    )


def judge_restores(slo: SloSpec, found: list[Restore]) -> list[SloResult]:
    """``max_rpo_messages`` and ``max_rto_s`` on the worst restore (only the SLOs that are set)."""
    out = []
    failed = [r.name for r in found if not r.ok]
    for name, target, unit, what, figure in (
        ("max_rpo_messages", slo.max_rpo_messages, "messages", "messages lost by the worst restore", "rpo"),
        ("max_rto_s", slo.max_rto_s, "s", "slowest restore to recovery", "rto"),
    ):
        if target is None:
            continue
        if not found:
            out.append(SloResult(name, target, None, True, unit, "no restore in this run"))
            continue
        values = [r.rpo_messages if figure == "rpo" else r.rto_s for r in found]
        known = [v for v in values if v is not None]
        worst = max(known) if known else None
        if failed:
            detail = f"restore(s) {', '.join(failed)} failed, limit {target:g} {unit}"
            out.append(SloResult(name, target, worst, False, unit, detail))
        elif len(known) < len(values):
            never = len(values) - len(known)
            detail = f"{never} of {len(values)} restore(s) never recovered, limit {target:g} {unit}"
            out.append(SloResult(name, target, worst, False, unit, detail))
        else:
            detail = f"{what}: {worst:g} {unit}, limit {target:g} {unit}"
            out.append(SloResult(name, target, worst, worst <= target, unit, detail))
    return out
