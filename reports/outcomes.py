"""Per-message truth: one outcome for every submitted message, and its latencies.

A *message* is one correlation id (``X-Mailstorm-Id``) that appears in at least one ``load.submit``
record; ``submitted`` counts those ids. Each gets exactly one outcome, decided in this order:

- ``duplicated``: the ESP accepted it (``esp.accepted`` with its id) two or more times;
- ``delivered``: the ESP accepted it exactly once. An ``esp.accepted`` with ``acked=false`` (the ESP kept
  the message but the client was cut off before the 250) still counts as an acceptance: the ESP will
  send it. A submission that timed out after DATA (``ok=false``) but whose message reached the ESP is
  delivered too: the ESP's record is the truth, the load side's view is only what the sender saw;
- ``bounced``: never accepted by the ESP, and refused permanently: an ``esp.replied`` with a 5xx code
  carrying its id, or a ``sut.bounced`` record for it;
- ``pending``: never accepted, not bounced, accepted by the SUT, and the SUT's ledger shows it still
  held for a later retry (a ``sut.deferred`` record and no ``sut.relayed`` with a 2xx code): it is in
  a queue at the deadline, not lost;
- ``lost``: never accepted, not bounced, not known to be held, yet the SUT accepted it (a ``load.submit``
  with ``ok=true``, or a ``sut.accepted`` record);
- ``rejected``: none of the above: every submission attempt failed and nothing downstream ever saw it
  (the sender knows; it is the sender's to retry). This includes a submission the generator itself
  abandoned when it was stopped (``phase: "stop"``), counted apart as ``rejected_at_stop``;
- ``uncorrelated``: would be ``lost``, but the ESP accepted mail whose id was never submitted
  (``esp_unmatched``): the pipeline stripped or rewrote the correlation carrier, so its fate is unknown,
  not known lost. See ``mark_uncorrelated``.

Several ``load.submit`` attempts for one id are one message: its intended time is the earliest
attempt's, and it was accepted by the SUT if any attempt was. ESP records whose id was never submitted
(mail the SUT made up, or a load ledger that is missing) are counted as ``esp_unmatched`` and are not
outcomes. Latencies, in ms: end-to-end = first ESP acceptance - intended send time (no coordinated
omission: a busy generator's lateness counts against the pipeline, as an open model must);
submission = end of the first successful attempt - intended send time. Percentiles are exact
(nearest rank over every message), which needs no histogram at this scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mailstorm.ledger import Kind
from mailstorm.reports.ingest import Columns

OUTCOMES = ("delivered", "duplicated", "bounced", "pending", "lost", "rejected", "uncorrelated")
DELIVERED, DUPLICATED, BOUNCED, PENDING, LOST, REJECTED, UNCORRELATED = range(len(OUTCOMES))
NEVER = np.iinfo(np.int64).max
PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p99_9": 99.9}


@dataclass
class Messages:
    """Columns indexed by message (0..submitted-1), plus the counts derived from them."""

    outcome: np.ndarray  # int8, one of the constants above
    intended: np.ndarray  # ns
    sut_in: np.ndarray  # ns when the SUT took it (NEVER if it never did)
    first_esp: np.ndarray  # ns of the first ESP acceptance (NEVER if none)
    left_at: np.ndarray  # ns when it left the SUT for good: first acceptance or bounce (NEVER if not)
    submit_ok_end: np.ndarray  # ns of the first successful submission's end (NEVER if none)
    first_start: np.ndarray  # ns when the generator actually began the first attempt
    submit_attempts: np.ndarray  # load.submit records per message
    esp_attempts: np.ndarray  # ESP records carrying its id (acceptances + replies): retry amplification
    unacked: int  # esp.accepted records with acked=false
    rejected_at_stop: int  # rejected messages with an attempt the generator abandoned when it stopped
    esp_unmatched: int  # ESP acceptances of ids never submitted

    def counts(self) -> dict[str, int]:
        per = np.bincount(self.outcome, minlength=len(OUTCOMES))
        out = {"submitted": len(self.outcome)}
        out.update({name: int(per[i]) for i, name in enumerate(OUTCOMES)})
        return out

    def e2e_ms(self) -> np.ndarray:
        got = self.first_esp != NEVER
        return (self.first_esp[got] - self.intended[got]) / 1e6

    def submit_ms(self) -> np.ndarray:
        got = self.submit_ok_end != NEVER
        return (self.submit_ok_end[got] - self.intended[got]) / 1e6


def classify(cols: Columns) -> Messages:
    """Decide every submitted message's outcome from the ledgers' columns."""
    sub = cols.table(Kind.LOAD_SUBMIT)
    # Dense message index for every interned id that was submitted.
    msg_of = np.full(len(cols.ids) + 1, -1, dtype=np.int64)  # +1: index -1 (no id) maps to -1
    seen = np.zeros(len(cols.ids), dtype=bool)  # ids are dense integers: a mask beats a sort
    seen[sub["id"][sub["id"] >= 0]] = True
    uniq = np.flatnonzero(seen)
    n = len(uniq)
    msg_of[uniq] = np.arange(n)

    def per_message(table_kind: str) -> tuple[np.ndarray, np.ndarray]:
        table = cols.table(table_kind)
        m = msg_of[table["id"]] if len(table) else np.zeros(0, dtype=np.int64)
        return m, m >= 0

    sm, sk = per_message(Kind.LOAD_SUBMIT)
    intended = np.full(n, NEVER, dtype=np.int64)
    # A writer that leaves out intended/start/end (0 once ingested) falls back on what it did record.
    end_t = np.where(sub["end"] > 0, sub["end"], sub["t"])
    start_t = np.where(sub["start"] > 0, sub["start"], end_t)
    intended_t = np.where(sub["intended"] > 0, sub["intended"], start_t)
    np.minimum.at(intended, sm[sk], intended_t[sk])
    submit_attempts = np.bincount(sm[sk], minlength=n)
    first_start = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first_start, sm[sk], start_t[sk])
    ok = sk & sub["ok"]
    submit_ok_end = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(submit_ok_end, sm[ok], end_t[ok])

    sut_in = submit_ok_end.copy()
    am, ak = per_message(Kind.SUT_ACCEPTED)
    np.minimum.at(sut_in, am[ak], cols.table(Kind.SUT_ACCEPTED)["t"][ak])

    esp = cols.table(Kind.ESP_ACCEPTED)
    em, ek = per_message(Kind.ESP_ACCEPTED)
    esp_count = np.bincount(em[ek], minlength=n)
    first_esp = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first_esp, em[ek], esp["t"][ek])

    rep = cols.table(Kind.ESP_REPLIED)
    rm, rk = per_message(Kind.ESP_REPLIED)
    esp_attempts = esp_count + np.bincount(rm[rk], minlength=n)
    hard = rk & (rep["code"] >= 500) & (rep["code"] < 600)
    bounce_at = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(bounce_at, rm[hard], rep["t"][hard])
    bm, bk = per_message(Kind.SUT_BOUNCED)
    np.minimum.at(bounce_at, bm[bk], cols.table(Kind.SUT_BOUNCED)["t"][bk])
    held = np.zeros(n, dtype=bool)
    dm, dk = per_message(Kind.SUT_DEFERRED)
    held[dm[dk]] = True
    # A message the SUT says it relayed (2xx) is no longer held, whatever it deferred before.
    rel = cols.table(Kind.SUT_RELAYED)
    lm, lk = per_message(Kind.SUT_RELAYED)
    done = lk & (rel["code"] >= 200) & (rel["code"] < 300)
    held[lm[done]] = False

    outcome = np.full(n, REJECTED, dtype=np.int8)
    sut_took = sut_in != NEVER
    outcome[sut_took] = LOST
    outcome[sut_took & held] = PENDING
    outcome[bounce_at != NEVER] = BOUNCED
    outcome[esp_count == 1] = DELIVERED
    outcome[esp_count >= 2] = DUPLICATED

    esp_unmatched = int((~ek).sum())
    mark_uncorrelated(outcome, sut_in, esp_unmatched)

    left_at = np.where(first_esp != NEVER, first_esp, np.where(outcome == BOUNCED, bounce_at, NEVER))
    # A message the ESP saw before the sender heard back (timeout after DATA) was in the SUT no later.
    sut_in = np.minimum(sut_in, left_at)
    return Messages(
        outcome=outcome,
        intended=intended,
        sut_in=sut_in,
        first_esp=first_esp,
        left_at=left_at,
        submit_ok_end=submit_ok_end,
        first_start=first_start,
        submit_attempts=submit_attempts,
        esp_attempts=esp_attempts,
        unacked=int((~esp["acked"]).sum()),
        rejected_at_stop=int(np.isin(np.flatnonzero(outcome == REJECTED), sm[sk & sub["phase"]]).sum()),
        esp_unmatched=esp_unmatched,
    )


def mark_uncorrelated(outcome: np.ndarray, sut_in: np.ndarray, esp_unmatched: int) -> None:
    """Correlation that broke is not loss: of the messages that would be ``lost``, as many as the ESP
    accepted mail with ids never submitted become ``uncorrelated`` (in place). Which ones cannot be
    known, so the earliest the SUT took are chosen (a FIFO pipeline's order); when every carrier was
    stripped, all of them."""
    if esp_unmatched <= 0:
        return
    lost = np.flatnonzero(outcome == LOST)
    if len(lost) > esp_unmatched:
        lost = lost[np.argsort(sut_in[lost], kind="stable")[:esp_unmatched]]
    outcome[lost] = UNCORRELATED


def percentiles(values_ms: np.ndarray) -> dict[str, float | int | None]:
    """p50..p99.9, max, mean and count of a latency sample (nearest rank; None when empty)."""
    if len(values_ms) == 0:
        return {**dict.fromkeys(PERCENTILES), "max": None, "mean": None, "count": 0}
    qs = np.percentile(values_ms, list(PERCENTILES.values()), method="inverted_cdf")
    out: dict[str, float | int | None] = {k: round(float(q), 3) for k, q in zip(PERCENTILES, qs, strict=True)}
    out["max"] = round(float(values_ms.max()), 3)
    out["mean"] = round(float(values_ms.mean()), 3)
    out["count"] = len(values_ms)
    return out
