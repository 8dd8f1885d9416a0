"""The runner's live statistics stay bounded over a long run: the fate module's incremental form forgets
settled messages ``forget_after_s`` after they settled (never lost or pending ones), and the live p95
forgets submissions that old; the counts are those of the unbounded form."""

from __future__ import annotations

import msgspec

from mailstorm.harness.progress import LiveStats
from mailstorm.ledger import Record
from mailstorm.reports.fate import Fates
from tests.records import accepted, bounced, submit

S = 1_000_000_000


def _at(t: int, rec: Record) -> Record:
    return msgspec.structs.replace(rec, t=t)


def _day(n: int, lost_every: int = 100) -> list[Record]:
    """``n`` messages one a second: each delivered 2 s after it was submitted, every ``lost_every``-th
    lost, every 7th refused by the SUT, every 50th bounced."""
    out: list[Record] = []
    for i in range(n):
        t = i * S
        mid = f"m{i}"
        out.append(_at(t, submit(mid, intended=t, ok=i % 7 != 3)))
        if i % 7 == 3 or i % lost_every == 0:
            continue
        out.append(_at(t + 2 * S, bounced(mid) if i % 50 == 1 else accepted(mid)))
    out.sort(key=lambda r: r.t)
    return out


def test_fates_forget_settled_messages_and_count_the_same():
    records = _day(5_000)
    bounded, unbounded = Fates(forget_after_s=60), Fates()
    for rec in records:
        bounded.feed(rec)
        unbounded.feed(rec)
        assert len(bounded._state) <= 61 + 5_000 // 100 + 5  # a minute of messages, plus the lost ones
    assert bounded.counts() == unbounded.counts()
    lost = [f"m{i}" for i in range(0, 5_000, 100) if i % 7 != 3]
    assert bounded.unsettled == unbounded.unsettled == len(lost) == 43  # every lost one is still known
    assert bounded.forgotten > 4_000
    assert all(bounded.outcome(mid) is not None for mid in lost)


def test_a_duplicate_past_the_horizon_counts_as_an_unknown_acceptance():
    """What forgetting costs, as the docs say: a second acceptance after the horizon is not a duplicate."""
    fates = Fates(forget_after_s=60)
    fates.feed(_at(0, submit("a", intended=0)))
    fates.feed(_at(S, accepted("a")))
    fates.feed(_at(120 * S, submit("b", intended=120 * S)))  # time passes
    fates.feed(_at(121 * S, accepted("a")))
    assert fates.counts()["duplicated"] == 0 and fates.esp_unmatched == 1
    within = Fates(forget_after_s=600)
    for rec in (_at(0, submit("a", intended=0)), _at(S, accepted("a")), _at(121 * S, accepted("a"))):
        within.feed(rec)
    assert within.counts()["duplicated"] == 1


def test_live_stats_forget_old_submissions_of_the_live_p95():
    stats = LiveStats(forget_after_s=60)
    stats.feed(_day(3_000, lost_every=10))
    assert len(stats._intended) <= 70  # lost ones older than a minute are no longer waited for
    assert len(stats.fates._state) <= 70 + 3_000 // 10
    unbounded = LiveStats()
    unbounded.feed(_day(3_000, lost_every=10))
    assert stats.fates.counts() == unbounded.fates.counts()
    assert len(unbounded._intended) > 290
