"""What the SUT still holds at the end of the drain, written to the ledger: one ``sut.held`` per message a
target that can list its queue (mailstorm.harness.targets.base.QueueLister) still holds, then one
``sut.listed`` saying whether that listing was the whole queue. The reports (mailstorm.reports.fate) make
held messages pending, and, after a complete listing, a deferred message not held lost: a wipe or a
restore from an older backup took it."""

from __future__ import annotations

from mailstorm.harness.targets.base import QueueLister
from mailstorm.ledger import LedgerWriter, SutHeld, SutListed


def record_held(target: QueueLister, writer: LedgerWriter, kind: str) -> int | None:
    """List ``target``'s queue into ``writer``; the number of the run's messages it holds, or None when
    the queue cannot be read now (nothing written: deferrals then count as held)."""
    held = target.held_ids()
    if held is None:
        return None
    for cid, queue_id in sorted(held.ids.items()):
        writer.write(SutHeld(id=cid, queue_id=queue_id, target=kind))
    writer.write(SutListed(target=kind, held=len(held.ids), complete=held.complete))
    return len(held.ids)
