"""One place decides a message's fate: the rules, an incremental form (the runner's live view and its
drain) and the batch form (the reports, in SQL: DuckDB runs it over a run's ledgers, out of core). Both
read the same facts from the same records and look the outcome up in the same table, so the console and
every report agree by construction.

A *message* is one correlation id (``X-Mailstorm-Id``) that appears in at least one ``load.submit``
record; ``submitted`` counts those ids. The ledgers establish facts about each id:

    fact       set by
    SUBMITTED  a ``load.submit`` with its id (it is a message)
    TOOK       a ``load.submit`` with ``ok=true``, or a ``sut.accepted`` (the SUT took it)
    ESP_ONCE   an ``esp.accepted`` (``acked=false`` included: the ESP kept it and will send it); one
               carrying a ``campaign`` is a campaign's message, judged by mailstorm.reports.campaign
    ESP_AGAIN  a second ``esp.accepted``
    REFUSED    an ``esp.replied`` with a 5xx code, or a ``sut.bounced`` (refused for good)
    DEFERRED   a ``sut.deferred`` (the SUT keeps it for a later retry)
    RELAYED    a ``sut.relayed`` with a 2xx code (the deferral is over, whatever came before)
    HELD       a ``sut.held`` (the runner listed it in the SUT's queue at the end of the drain)
    LISTED     a complete ``sut.listed`` (the runner listed the whole queue: what it does not hold, the
               SUT no longer has); one record with no id, so it sets this fact on every message
    STOPPED    a ``load.submit`` with ``phase: "stop"`` (the generator abandoned it when stopped)

Facts only accumulate, so the order the records arrive in (files are read one after another, the
live view tails them as they grow) does not matter. Each message gets exactly one outcome, the first
that holds (``decide``):

- ``duplicated``: ESP_AGAIN: the ESP accepted it two or more times;
- ``delivered``: ESP_ONCE: exactly once (and, when the ESP took it into its backlog, ESP_HELD, out of
  it: ESP_OUT, its esp.delivered; until then it is ``pending`` at the ESP). A submission that timed out
  after DATA (``ok=false``) whose message reached the ESP is delivered: the ESP's record is the truth,
  the sender's only what it saw;
- ``bounced``: never accepted by the ESP, and REFUSED;
- ``pending``: accepted once by the ESP into its backlog and not out of it yet (ESP_HELD, no ESP_OUT);
  or TOOK, and still held by the SUT: HELD, or DEFERRED and not RELAYED (unless LISTED: a complete
  listing of the queue did not find it, so a wipe or a restore took it). It is in a queue at the
  deadline, not lost;
- ``lost``: TOOK, and not known to be held;
- ``rejected``: none of the above: every submission attempt failed and nothing downstream ever saw it
  (the sender knows; it is the sender's to retry). One the generator abandoned when it was stopped
  (STOPPED) is counted apart as ``rejected_at_stop``;
- ``uncorrelated``: would be ``lost``, but the ESP accepted mail whose id was never submitted
  (``esp_unmatched``: the pipeline stripped or rewrote the correlation carrier), so its fate is unknown,
  not known lost. As many would-be lost messages as there are such acceptances become uncorrelated (in
  the batch form, the earliest the SUT took: a FIFO pipeline's order; which ones cannot be known).

While a run goes, a message is *unsettled* when its outcome would be ``lost`` or ``pending`` if the run
ended now: the SUT took it and it has neither reached the ESP nor been refused. The drain waits for
the unsettled count to reach zero.

The batch form also gives every message its times, in ns: intended = the earliest attempt's; the
SUT took it at the end of the first successful attempt or its ``sut.accepted``, and no later than the
ESP's first acceptance; it left the SUT at the first acceptance or its bounce. ESP acceptances of ids
never submitted (mail the SUT made up, or a missing load ledger) are ``esp_unmatched``, not outcomes.

The runner imports this module for its live view: it imports nothing heavy (no numpy, no DuckDB).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from mailstorm.ledger import Kind, Record

OUTCOMES = ("delivered", "duplicated", "bounced", "pending", "lost", "rejected", "uncorrelated")
DELIVERED, DUPLICATED, BOUNCED, PENDING, LOST, REJECTED, UNCORRELATED = range(len(OUTCOMES))
NEVER = 2**63 - 1  # int64 max: "no such time"

# The facts, one bit each: a message's state is the OR of the facts its records set.
(SUBMITTED, TOOK, ESP_ONCE, ESP_AGAIN, REFUSED, DEFERRED, RELAYED, HELD, STOPPED, ESP_HELD, ESP_OUT,
 LISTED) = (1 << i for i in range(12))  # fmt: skip
STATES = 1 << 12


def decide(state: int) -> int:
    """The outcome of a message whose records set the facts in ``state``: the first rule that holds."""
    if state & ESP_AGAIN:
        return DUPLICATED
    if state & ESP_ONCE:  # held in the ESP's backlog and not out of it yet: pending at the ESP
        return PENDING if state & ESP_HELD and not state & ESP_OUT else DELIVERED
    if state & REFUSED:
        return BOUNCED
    if state & TOOK:
        held = state & HELD or (state & DEFERRED and not state & (RELAYED | LISTED))
        return PENDING if held else LOST
    return REJECTED


OUTCOME_OF = tuple(decide(s) for s in range(STATES))  # both forms look outcomes up here
_SETTLED = frozenset((DELIVERED, DUPLICATED, BOUNCED, REJECTED))


def _forgettable(state: int) -> bool:
    """A state the incremental form may forget: settled, or never submitted (see ``Fates``)."""
    return not state & SUBMITTED or OUTCOME_OF[state] in _SETTLED


def _code_in(code: Any, low: int) -> bool:
    return isinstance(code, int) and low <= code < low + 100


def record_facts(rec: Record | Mapping[str, Any]) -> int:
    """The facts one ledger record sets about its id (0: none). ``ESP_ONCE`` stands for any acceptance;
    the caller makes a second one ``ESP_AGAIN``. Takes a declared record (the live tail) or a line as a
    mapping (``LedgerReader.records()``, which also keeps an older writer's partial lines)."""
    if isinstance(rec, Record):
        kind = rec.kind

        def get(name: str) -> Any:
            return getattr(rec, name, None)
    else:
        kind, get = rec.get("k"), rec.get
    if kind == Kind.LOAD_SUBMIT:
        return SUBMITTED | (TOOK if get("ok") else 0) | (STOPPED if get("phase") == "stop" else 0)
    if kind == Kind.ESP_ACCEPTED:
        if get(
            "campaign"
        ):  # a campaign's message is the campaign's (mailstorm.reports.campaign), not the load's
            return 0
        return ESP_ONCE | (ESP_HELD if get("held") else 0)
    if kind == Kind.ESP_DELIVERED:
        return ESP_OUT
    if kind == Kind.SUT_ACCEPTED:
        return TOOK
    if kind == Kind.ESP_REPLIED:
        return REFUSED if _code_in(get("code"), 500) else 0
    if kind == Kind.SUT_BOUNCED:
        return REFUSED
    if kind == Kind.SUT_DEFERRED:
        return DEFERRED
    if kind == Kind.SUT_RELAYED:
        return RELAYED if _code_in(get("code"), 200) else 0
    if kind == Kind.SUT_HELD:
        return HELD
    if kind == Kind.SUT_LISTED:
        return LISTED if get("complete") else 0
    return 0


class Fates:
    """The incremental form: outcome counts kept up to date record by record (the live view, the drain).

    Costs one small int per id seen; fed every record of a run, in any order, its counts equal the
    batch form's over the same ledgers.

    ``forget_after_s`` (the runner's live view sets it; None: never) keeps that cost flat over a long
    run: an id is forgotten once that long (in ledger time, the newest record's ``t``) has passed since it
    settled (delivered, duplicated, bounced or rejected: its outcome counted) or since it was first seen
    without a submission (an ESP acceptance of an id never submitted, whose count stays in
    ``esp_unmatched``). The counts keep them. What is lost: a record about a forgotten id is taken as
    about a new one, so a duplicate acceptance arriving later than that counts as an ESP acceptance of
    an unknown id (``esp_unmatched``) instead of turning the message ``duplicated``, and a submission
    arriving that much after its ESP acceptance is counted as submitted and not delivered. Lost and
    pending messages are never forgotten: they are what the drain waits on.
    """

    def __init__(self, *, forget_after_s: float | None = None) -> None:
        self._state: dict[str, int] = {}
        self._horizon_ns = None if forget_after_s is None else int(forget_after_s * 1e9)
        self._expiry: deque[tuple[int, str]] = deque()  # (t, id) in the order ids settled or appeared
        self._newest_ns = 0
        self.forgotten = 0
        self._per = [0] * len(OUTCOMES)
        self.submitted = 0
        self.attempts = 0  # load.submit records: several attempts may carry one message
        # ESP acceptances of ids not (yet) submitted, per id (an id's leave when it is submitted), and
        # their running total with those of no id at all: esp_unmatched
        self._unmatched: dict[str, int] = {}
        self.esp_unmatched = 0
        self._every = 0  # facts a record with no id set on every message (LISTED)

    def feed(self, rec: Record | Mapping[str, Any]) -> None:
        facts = record_facts(rec)
        mid = rec.get("id") if isinstance(rec, Mapping) else getattr(rec, "id", None)
        if not facts:
            return
        if facts & LISTED:
            self._set_on_every(LISTED)
            return
        if not isinstance(mid, str):
            self.esp_unmatched += bool(facts & ESP_ONCE)
            return
        if facts & SUBMITTED:
            self.attempts += 1
        old = self._state.get(mid, 0)
        if facts & ESP_ONCE and not old & SUBMITTED:
            self._unmatched[mid] = self._unmatched.get(mid, 0) + 1
            self.esp_unmatched += 1
        elif facts & SUBMITTED and not old & SUBMITTED:
            self.esp_unmatched -= self._unmatched.pop(mid, 0)
        if facts & ESP_ONCE and old & ESP_ONCE:
            facts = ESP_AGAIN
        self._set(mid, old, old | facts | self._every, rec)

    def _set(self, mid: str, old: int, new: int, rec: Record | Mapping[str, Any] | None = None) -> None:
        if new == old:
            return
        self._state[mid] = new
        if old & SUBMITTED:
            self._per[OUTCOME_OF[old]] -= 1
        elif new & SUBMITTED:
            self.submitted += 1
        if new & SUBMITTED:
            self._per[OUTCOME_OF[new]] += 1
        if self._horizon_ns is not None and rec is not None:
            self._expire(rec, mid, old, new)

    def _expire(self, rec: Record | Mapping[str, Any], mid: str, old: int, new: int) -> None:
        t = rec.get("t") if isinstance(rec, Mapping) else getattr(rec, "t", None)
        if not isinstance(t, int):
            return
        if old == 0 or (_forgettable(new) and not _forgettable(old)):
            self._expiry.append((t, mid))
        if t <= self._newest_ns:
            return
        self._newest_ns = t
        assert self._horizon_ns is not None
        horizon, expiry, state = t - self._horizon_ns, self._expiry, self._state
        while expiry and expiry[0][0] < horizon:
            _, old_id = expiry.popleft()
            st = state.get(old_id)
            if st is not None and _forgettable(st):
                del state[old_id]
                self._unmatched.pop(old_id, None)
                self.forgotten += 1

    def _set_on_every(self, fact: int) -> None:
        """A run-wide fact: on every message seen, and on every one seen later (once, at a listing)."""
        if self._every & fact:
            return
        self._every |= fact
        for mid, old in list(self._state.items()):
            self._set(mid, old, old | fact)

    def feed_all(self, records: Iterable[Record | Mapping[str, Any]]) -> None:
        for rec in records:
            self.feed(rec)

    def was_submitted(self, mid: str) -> bool:
        return bool(self._state.get(mid, 0) & SUBMITTED)

    def outcome(self, mid: str) -> int | None:
        """One message's outcome if the run ended now (None: no such id submitted). Before the
        uncorrelated share, which is a count, not a property of one message."""
        state = self._state.get(mid, 0)
        return OUTCOME_OF[state] if state & SUBMITTED else None

    def count(self, outcome: int) -> int:
        if outcome == UNCORRELATED:
            return self._uncorrelated()
        return self._per[outcome] - (self._uncorrelated() if outcome == LOST else 0)

    def _uncorrelated(self) -> int:
        return min(self._per[LOST], self.esp_unmatched)

    @property
    def unsettled(self) -> int:
        """Messages the SUT took that have neither reached the ESP nor been refused, less those the ESP's
        unmatched acceptances account for (the drain waits for none)."""
        return self._per[PENDING] + self._per[LOST] - self._uncorrelated()

    def counts(self) -> dict[str, int]:
        per = list(self._per)
        per[UNCORRELATED] = self._uncorrelated()
        per[LOST] -= per[UNCORRELATED]
        return {"submitted": self.submitted, **{name: per[i] for i, name in enumerate(OUTCOMES)}}


# -- The batch form, in SQL (mailstorm.reports.store runs it in DuckDB over a run's ledgers) -----------------
# The same facts from the same records as ``record_facts`` and the same OUTCOME_OF table: tests/reports/
# test_fate*.py prove it gives every message the incremental form's outcome (and the numpy oracle's,
# tests/reports/oracle.py). It reads a relation ``rec`` with one row per ledger line (columns k, t, id,
# intended, start, "end", ok, code, phase, acked, held, campaign, complete; NULL where a line lacks the
# field) and leaves a table ``msg``, one row per submitted message, with its times (NEVER for "no such
# time") and ``outcome`` (UNCORRELATED applied), and a table ``unmatched`` whose one value ``n`` is
# esp_unmatched.

SQL_KINDS = tuple(
    str(k)
    for k in (
        Kind.LOAD_SUBMIT, Kind.SUT_ACCEPTED, Kind.ESP_ACCEPTED, Kind.ESP_DELIVERED, Kind.ESP_REPLIED,
        Kind.SUT_BOUNCED, Kind.SUT_DEFERRED, Kind.SUT_RELAYED, Kind.SUT_HELD, Kind.SUT_LISTED,
    )
)  # fmt: skip


def _messages_sql() -> str:
    lookup = "[" + ",".join(map(str, OUTCOME_OF)) + "]"
    k = {name: f"'{Kind[name]}'" for name in ("LOAD_SUBMIT", "SUT_ACCEPTED", "ESP_ACCEPTED", "ESP_DELIVERED",
                                             "ESP_REPLIED", "SUT_BOUNCED", "SUT_DEFERRED", "SUT_RELAYED",
                                             "SUT_HELD", "SUT_LISTED")}  # fmt: skip
    return f"""
CREATE OR REPLACE TABLE per_id AS  -- every id, submitted or not
WITH r AS (  -- a line without intended/start/end (0 in the batch form) falls back on what it did record
    SELECT k, t, id, code, coalesce(ok, false) AS ok, phase, coalesce(held, false) AS held,
           CASE WHEN coalesce("end", 0) > 0 THEN "end" ELSE t END AS end_t,
           CASE WHEN coalesce(start, 0) > 0 THEN start
                WHEN coalesce("end", 0) > 0 THEN "end" ELSE t END AS start_t,
           CASE WHEN coalesce(intended, 0) > 0 THEN intended
                WHEN coalesce(start, 0) > 0 THEN start
                WHEN coalesce("end", 0) > 0 THEN "end" ELSE t END AS intended_t
    FROM rec WHERE id IS NOT NULL AND NOT (k = {k["ESP_ACCEPTED"]} AND campaign IS NOT NULL)
)
SELECT id,
        min(intended_t) FILTER (WHERE k = {k["LOAD_SUBMIT"]}) AS intended,
        count(*) FILTER (WHERE k = {k["LOAD_SUBMIT"]}) AS submit_attempts,
        min(start_t) FILTER (WHERE k = {k["LOAD_SUBMIT"]}) AS first_start,
        coalesce(min(end_t) FILTER (WHERE k = {k["LOAD_SUBMIT"]} AND ok), {NEVER}) AS submit_ok_end,
        coalesce(min(t) FILTER (WHERE k = {k["SUT_ACCEPTED"]}), {NEVER}) AS sut_accepted,
        count(*) FILTER (WHERE k = {k["ESP_ACCEPTED"]}) AS esp_count,
        coalesce(min(t) FILTER (WHERE k = {k["ESP_ACCEPTED"]}), {NEVER}) AS first_esp,
        coalesce(min(t) FILTER (WHERE k = {k["ESP_DELIVERED"]}), {NEVER}) AS held_until,
        coalesce(bool_or(held) FILTER (WHERE k = {k["ESP_ACCEPTED"]}), false) AS held_at_esp,
        count(*) FILTER (WHERE k = {k["ESP_REPLIED"]}) AS replies,
        coalesce(min(t) FILTER (WHERE (k = {k["ESP_REPLIED"]} AND code >= 500 AND code < 600)
                                   OR k = {k["SUT_BOUNCED"]}), {NEVER}) AS bounce_at,
        bool_or(k = {k["SUT_DEFERRED"]}) AS deferred,
        bool_or(k = {k["SUT_RELAYED"]} AND code >= 200 AND code < 300) AS relayed,
        bool_or(k = {k["SUT_HELD"]}) AS held,
        bool_or(k = {k["LOAD_SUBMIT"]} AND phase = 'stop') AS stopped
FROM r GROUP BY id;

-- ESP acceptances of ids never submitted (or of no id): esp_unmatched
CREATE OR REPLACE TABLE unmatched AS
SELECT coalesce(sum(esp_count) FILTER (WHERE submit_attempts = 0), 0)
       + (SELECT count(*) FROM rec WHERE k = {k["ESP_ACCEPTED"]} AND campaign IS NULL AND id IS NULL) AS n
FROM per_id;

CREATE OR REPLACE TABLE msg AS
WITH per AS (
    SELECT * FROM per_id WHERE submit_attempts > 0
), facts AS (  -- the facts, as record_facts sets them
    SELECT *, least(submit_ok_end, sut_accepted) AS took_at,
        ({SUBMITTED}
         | CASE WHEN least(submit_ok_end, sut_accepted) != {NEVER} THEN {TOOK} ELSE 0 END
         | CASE WHEN esp_count >= 1 THEN {ESP_ONCE} ELSE 0 END
         | CASE WHEN esp_count >= 2 THEN {ESP_AGAIN} ELSE 0 END
         | CASE WHEN held_at_esp THEN {ESP_HELD} ELSE 0 END
         | CASE WHEN held_until != {NEVER} THEN {ESP_OUT} ELSE 0 END
         | CASE WHEN bounce_at != {NEVER} THEN {REFUSED} ELSE 0 END
         | CASE WHEN deferred THEN {DEFERRED} ELSE 0 END
         | CASE WHEN relayed THEN {RELAYED} ELSE 0 END
         | CASE WHEN held THEN {HELD} ELSE 0 END
         | CASE WHEN stopped THEN {STOPPED} ELSE 0 END
         -- a complete queue listing (one record, no id) is a fact about every message
         | CASE WHEN (SELECT bool_or(complete) FROM rec WHERE k = {k["SUT_LISTED"]}) THEN {LISTED} ELSE 0 END
        ) AS state
    FROM per
), decided AS (
    SELECT *, {lookup}[state + 1]::TINYINT AS fate FROM facts
), uncorrelated AS (  -- mark_uncorrelated: of the would-be lost, as many, the earliest the SUT took
    SELECT id FROM decided WHERE fate = {LOST}
    QUALIFY row_number() OVER (ORDER BY took_at, intended, id) <= (SELECT n FROM unmatched)
)
SELECT id, intended, first_start, submit_ok_end, first_esp, submit_attempts,
    esp_count + replies AS esp_attempts, stopped,
    CASE WHEN fate = {LOST} AND id IN (SELECT id FROM uncorrelated) THEN {UNCORRELATED} ELSE fate END
        AS outcome,
    CASE WHEN held_until != {NEVER} THEN held_until WHEN held_at_esp THEN {NEVER} ELSE first_esp END
        AS esp_delivered,
    CASE WHEN first_esp != {NEVER} THEN first_esp WHEN fate = {BOUNCED} THEN bounce_at ELSE {NEVER} END
        AS left_at,
    -- a message the ESP saw before the sender heard back (timeout after DATA) was in the SUT no later
    least(took_at, CASE WHEN first_esp != {NEVER} THEN first_esp
                        WHEN fate = {BOUNCED} THEN bounce_at ELSE {NEVER} END) AS sut_in
FROM decided;

DROP TABLE per_id;
"""


MESSAGES_SQL = _messages_sql()
UNACKED_SQL = (
    f"SELECT count(*) FROM rec WHERE k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL AND acked = false"
)
