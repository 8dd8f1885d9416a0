"""Campaigns, recipient by recipient: every address on a campaign's list gets exactly one outcome, and
the outcomes add up to the list (docs/campaigns.md).

    outcome          the recipient is                  and the ESP accepted mail for it
    delivered        subscribed                        exactly once
    duplicated       subscribed                        two or more times
    bounced          subscribed, refused for good      never (the SUT's sut.bounced names it)
    missing          subscribed                        never, and no bounce names it
    suppressed_sent  unsubscribed                      at least once: a compliance breach
    suppressed       unsubscribed                      never: as it should be

Acceptances are the ESP's ``esp.accepted`` records, by envelope recipient (``to``); across several fake
ESPs they add up. With ``correlation: header`` only those carrying the campaign's id in
``X-Mailstorm-Campaign`` count, and one for an address not on the list is ``unexpected`` (counted apart,
not an outcome); with ``correlation: recipient`` every acceptance for an address on the list counts
(a transactional message to a subscriber is then indistinguishable from the campaign's, and
``unexpected`` cannot be measured). With ``header``, acceptances for listed addresses that carry no
campaign header are counted (``unheaded``): when subscribers are missing and such mail reached them,
the header may not have survived the SUT, and the missing objective says so (no false verdict on a
broken correlation either way).

Times are from the trigger (``campaign.trigger``): to the first delivery, to the last recipient's first
delivery (the completion), and each recipient's first delivery (p50/p90/p99). Per fault window: of the
subscribers still owed when it opened, how many came only after it closed (delayed) or never (missing),
and how many recipients got a second copy from its start until the next window's.

One pass over the ledgers reads only the lines it needs (campaign.*, esp.accepted, sut.bounced); the list
is read back from ``<run>/campaign/<id>.csv``; the rest is numpy over recipient indices, so a million
recipients take seconds (bench/bench_campaign.py).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mailstorm.errors import UserError
from mailstorm.ledger import CampaignAnswer, CampaignList, CampaignTrigger, EspAccepted, SutBounced
from mailstorm.reports.ingest import scan
from mailstorm.reports.recovery import Window

OUTCOMES = ("delivered", "duplicated", "bounced", "missing", "suppressed_sent", "suppressed")
DELIVERED, DUPLICATED, BOUNCED, MISSING, SUPPRESSED_SENT, SUPPRESSED = range(len(OUTCOMES))
NEVER = 2**63 - 1
_NS = 1_000_000_000
_WANTED = (b'"k":"campaign.', b'"k":"esp.accepted"', b'"k":"sut.bounced"')
_PCTS = {"p50": 50, "p90": 90, "p99": 99}


@dataclass
class Raw:
    """What the ledgers say about campaigns: lists, triggers, answers, acceptances, bounces."""

    lists: list[CampaignList] = field(default_factory=list)
    triggers: dict[str, CampaignTrigger] = field(default_factory=dict)
    answers: dict[str, CampaignAnswer] = field(default_factory=dict)
    acc_t: list[int] = field(default_factory=list)
    acc_to: list[list[str]] = field(default_factory=list)
    acc_campaign: list[str | None] = field(default_factory=list)
    bounced: set[str] = field(default_factory=set)  # addresses (lower case) a sut.bounced names


def read(ledger_dir: Path) -> Raw:
    raw = Raw()
    for rec in scan(ledger_dir, _WANTED):
        if isinstance(rec, EspAccepted):
            if rec.to:
                raw.acc_t.append(rec.t)
                raw.acc_to.append(rec.to)
                raw.acc_campaign.append(rec.campaign)
        elif isinstance(rec, SutBounced):
            raw.bounced.update(r.lower() for r in rec.rcpts or ())
        elif isinstance(rec, CampaignList):
            raw.lists.append(rec)
        elif isinstance(rec, CampaignTrigger):
            raw.triggers[rec.id] = rec
        elif isinstance(rec, CampaignAnswer):
            raw.answers[rec.id] = rec
    return raw


def read_list(path: Path) -> tuple[list[str], np.ndarray]:
    """The addresses (lower case) of a written list and which unsubscribed, in list order."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            rows = [(r[0].lower(), r[2] == "unsubscribed") for r in reader if r]
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: the campaign's list cannot be read back: {exc}") from None
    emails = [e for e, _ in rows]
    return emails, np.fromiter((g for _, g in rows), dtype=bool, count=len(rows))


@dataclass
class Campaign:
    """One campaign's figures and per-recipient arrays (index = list row)."""

    id: str
    correlation: str
    started: bool
    trigger: dict[str, Any]
    outcome: np.ndarray  # int8, one of OUTCOMES
    first: np.ndarray  # ns of the first acceptance, NEVER
    unexpected: int | None
    unheaded: int  # header mode: acceptances for listed addresses without the campaign header
    trigger_ns: int | None
    windows: list[dict[str, Any]]
    delivered_per_s: np.ndarray  # first deliveries per second of the run (series t0)
    esp_rate: float | None = None  # the ESP's rate limit (msg/s), when the run had one

    def counts(self) -> dict[str, int]:
        per = np.bincount(self.outcome, minlength=len(OUTCOMES))
        return {name: int(per[i]) for i, name in enumerate(OUTCOMES)}

    def times(self) -> dict[str, Any]:
        reached = (self.first != NEVER) & np.isin(self.outcome, (DELIVERED, DUPLICATED))
        subscribed = int(np.isin(self.outcome, (DELIVERED, DUPLICATED, BOUNCED, MISSING)).sum())
        # What the ESP's quota alone allows: the shortest the send could take.
        quota = {"at_esp_rate_s": round(subscribed / self.esp_rate, 3) if self.esp_rate else None}
        if self.trigger_ns is None or not reached.any():
            return {"first_delivery_s": None, "completion_s": None, "rate_per_s": None,
                    **dict.fromkeys(_PCTS), **quota}  # fmt: skip
        lat_s = (self.first[reached] - self.trigger_ns) / _NS
        qs = np.percentile(lat_s, list(_PCTS.values()), method="inverted_cdf")
        done = float(lat_s.max())
        return {
            "first_delivery_s": round(float(lat_s.min()), 3),
            "completion_s": round(done, 3),
            "rate_per_s": round(int(reached.sum()) / done, 3) if done > 0 else None,
            **{k: round(float(q), 3) for k, q in zip(_PCTS, qs, strict=True)},
            **quota,
        }

    def as_dict(self) -> dict[str, Any]:
        counts = self.counts()
        return {
            "id": self.id,
            "correlation": self.correlation,
            "started": self.started,
            "trigger": self.trigger,
            "recipients": len(self.outcome),
            "unsubscribed": counts["suppressed_sent"] + counts["suppressed"],
            "outcomes": counts,
            "unexpected": self.unexpected,
            "unheaded": self.unheaded,
            "times": self.times(),
            "windows": self.windows,
        }


def analyze(
    run_dir: Path,
    correlations: dict[str, str],
    t0_ns: int,
    seconds: int,
    windows: list[Window],
    esp_rate: float | None = None,
) -> list[Campaign]:
    """Every campaign of the run. ``correlations`` is each campaign's ``correlation`` (header when not
    said), ``t0_ns``/``seconds`` the run's series grid, ``windows`` its fault windows, ``esp_rate`` the
    ESP's rate limit (the shortest time the list could take)."""
    raw = read(run_dir / "ledger")
    if not raw.lists:
        return []
    acc_t = np.asarray(raw.acc_t, dtype=np.int64)
    out = []
    for lst in raw.lists:
        path = run_dir / "campaign" / f"{lst.id}.csv"
        emails, gone = read_list(path if path.exists() else Path(lst.path))
        corr = correlations.get(lst.id, "header")
        c = _one(lst.id, emails, gone, raw, acc_t, corr, t0_ns, seconds, windows)
        c.esp_rate = esp_rate
        out.append(c)
    return out


def _one(
    cid: str, emails: list[str], gone: np.ndarray, raw: Raw, acc_t: np.ndarray, correlation: str,
    t0_ns: int, seconds: int, windows: list[Window],
) -> Campaign:  # fmt: skip
    n = len(emails)
    index = {e: i for i, e in enumerate(emails)}
    idx: list[int] = []
    rows: list[int] = []
    unexpected = unheaded = 0
    header = correlation == "header"
    for r, (to, camp) in enumerate(zip(raw.acc_to, raw.acc_campaign, strict=True)):
        if header and camp != cid:
            if camp is None:  # did the header not survive? (a transactional message to a subscriber, or)
                unheaded += sum(a.lower() in index for a in to)
            continue
        for address in to:
            i = index.get(address.lower())
            if i is None:
                unexpected += 1
                continue
            idx.append(i)
            rows.append(r)
    ix = np.asarray(idx, dtype=np.int64)
    ts = acc_t[np.asarray(rows, dtype=np.int64)] if rows else np.zeros(0, dtype=np.int64)
    count = np.bincount(ix, minlength=n)
    first = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first, ix, ts)
    bounced = np.zeros(n, dtype=bool)
    for address in raw.bounced:
        if (i := index.get(address)) is not None:
            bounced[i] = True
    outcome = np.full(n, MISSING, dtype=np.int8)
    outcome[bounced] = BOUNCED
    outcome[count == 1] = DELIVERED
    outcome[count >= 2] = DUPLICATED
    outcome[gone] = np.where(count[gone] >= 1, SUPPRESSED_SENT, SUPPRESSED)
    trig = raw.triggers.get(cid)
    ans = raw.answers.get(cid)
    trigger_ns = ans.started if ans is not None else (trig.t if trig is not None else None)
    trigger = {
        "via": trig.via if trig else None,
        "request": trig.request if trig else None,
        "at_s": trig.at_s if trig else None,
        "ok": ans.ok if ans else None,
        "code": ans.code if ans else None,
        "answer": ans.answer if ans else None,
    }
    # Second and later copies, for the windows: every acceptance but each recipient's first.
    order = np.lexsort((ts, ix))
    extra = np.zeros(len(order), dtype=bool)
    extra[1:] = ix[order][1:] == ix[order][:-1]
    extra_i, extra_t = ix[order][extra], ts[order][extra]
    reached = first != NEVER
    per_s = np.zeros(max(seconds, 1), dtype=np.int64)
    if reached.any():
        sec = np.clip((first[reached & ~gone] - t0_ns) // _NS, 0, None)
        per_s = np.bincount(sec, minlength=len(per_s))
    wins = []
    for k, w in enumerate(windows):
        start_ns, end_ns = t0_ns + int(w.start_s * _NS), t0_ns + int(w.end_s * _NS)
        until = t0_ns + int(windows[k + 1].start_s * _NS) if k + 1 < len(windows) else NEVER
        owed = ~gone & (first >= start_ns)  # NEVER included: not delivered when it opened
        copies = (extra_t >= start_ns) & (extra_t < until)
        wins.append({
            "name": w.name, "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3),
            "owed": int(owed.sum()),
            "delayed": int((owed & reached & (first > end_ns)).sum()),
            "missing": int((owed & (outcome == MISSING)).sum()),
            "duplicated": len(np.unique(extra_i[copies])),
        })  # fmt: skip
    return Campaign(
        id=cid,
        correlation=correlation,
        started=bool(ans is not None and ans.ok),
        trigger=trigger,
        outcome=outcome,
        first=first,
        unexpected=unexpected if header else None,
        unheaded=unheaded,
        trigger_ns=trigger_ns,
        windows=wins,
        delivered_per_s=per_s,
    )
