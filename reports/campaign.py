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

The work is SQL over the run's ``Store`` (reports/store.py): the list is read back from
``<run>/campaign/<id>.csv`` into DuckDB (its row number is the recipient's index), joined there to the
acceptances' recipients (``esp.accepted``'s ``to``, unnested) and to the bounced addresses
(``sut.bounced``'s ``rcpts``), so memory stays DuckDB's budget whatever the run's length; Python holds
the figures, one outcome byte per recipient (the list's size, not the run's) and the deliveries per
second (bench/bench_campaign.py: a million recipients).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from mailstorm.errors import UserError
from mailstorm.ledger import CampaignAnswer, CampaignList, CampaignTrigger, EspAccepted, SutBounced
from mailstorm.reports.recovery import Window
from mailstorm.reports.store import Store, in_order, rank

OUTCOMES = ("delivered", "duplicated", "bounced", "missing", "suppressed_sent", "suppressed")
DELIVERED, DUPLICATED, BOUNCED, MISSING, SUPPRESSED_SENT, SUPPRESSED = range(len(OUTCOMES))
NEVER = 2**63 - 1
_NS = 1_000_000_000
_PCTS = {"p50": 50, "p90": 90, "p99": 99}
# The temporary tables of one campaign: its list (in file order: rowid is the recipient's index), its
# acceptances matched to recipients (i, t), and its recipients' figures.
_LIST, _HIT, _RCPT = "campaign_list", "campaign_hit", "campaign_rcpt"


@dataclass
class Campaign:
    """One campaign's figures, with its outcome per recipient (index = list row)."""

    id: str
    correlation: str
    started: bool
    trigger: dict[str, Any]
    outcome: np.ndarray  # int8, one of OUTCOMES
    unexpected: int | None
    unheaded: int  # header mode: acceptances for listed addresses without the campaign header
    trigger_ns: int | None
    windows: list[dict[str, Any]]
    delivered_per_s: np.ndarray  # first deliveries per second of the run (series t0)
    times: dict[str, Any]  # from the trigger: first delivery, completion, p50/p90/p99, rate

    def counts(self) -> dict[str, int]:
        per = np.bincount(self.outcome, minlength=len(OUTCOMES))
        return {name: int(per[i]) for i, name in enumerate(OUTCOMES)}

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
            "times": self.times,
            "windows": self.windows,
        }


def analyze(
    run_dir: Path,
    store: Store,
    correlations: dict[str, str],
    t0_ns: int,
    seconds: int,
    windows: list[Window],
    esp_rate: float | None = None,
) -> list[Campaign]:
    """Every campaign of the run. ``correlations`` is each campaign's ``correlation`` (header when not
    said), ``t0_ns``/``seconds`` the run's series grid, ``windows`` its fault windows, ``esp_rate`` the
    ESP's rate limit (the shortest time the list could take)."""
    listed = store.whole[CampaignList]
    triggers = {r.id: r for r in store.whole[CampaignTrigger]}  # by time: the last one of an id wins
    answers = {r.id: r for r in store.whole[CampaignAnswer]}
    out = []
    for lst in listed:
        assert isinstance(lst, CampaignList)
        trig, ans = triggers.get(lst.id), answers.get(lst.id)
        trigger_ns = ans.started if ans is not None else (trig.t if trig is not None else None)
        correlation = correlations.get(lst.id, "header")
        path = run_dir / "campaign" / f"{lst.id}.csv"
        try:
            _read_list(store, path if path.exists() else Path(lst.path))
            outcome, unexpected, unheaded = _recipients(store, lst.id, correlation)
            wins, per_s = _windows(store, t0_ns, windows), _per_second(store, t0_ns, seconds)
            times = _times(store, trigger_ns, esp_rate)
        finally:
            store.con.execute(f"DROP TABLE IF EXISTS {_LIST}; DROP TABLE IF EXISTS {_HIT}; "
                              f"DROP TABLE IF EXISTS {_RCPT}")  # fmt: skip
        trigger = {
            "via": trig.via if trig else None,
            "request": trig.request if trig else None,
            "at_s": trig.at_s if trig else None,
            "ok": ans.ok if ans else None,
            "code": ans.code if ans else None,
            "answer": ans.answer if ans else None,
        }
        out.append(
            Campaign(
                id=lst.id,
                correlation=correlation,
                started=bool(ans is not None and ans.ok),
                trigger=trigger,
                outcome=outcome,
                unexpected=unexpected,
                unheaded=unheaded,
                trigger_ns=trigger_ns,
                windows=wins,
                delivered_per_s=per_s,
                times=times,
            )
        )
    return out


def _read_list(store: Store, path: Path) -> None:
    """The written list (``email,name,status``) into table ``_LIST``: lower-case address and whether it
    unsubscribed, in file order (its rowid: the insertion order is kept for this one statement)."""
    try:
        with in_order(store.con):
            store.con.execute(
                f"""CREATE TEMP TABLE {_LIST} AS SELECT lower(email) AS email,
                    coalesce(status = 'unsubscribed', false) AS gone
                    FROM read_csv(?, header = true, auto_detect = false, delim = ',', quote = '"',
                    escape = '"', columns = {{'email': 'VARCHAR', 'name': 'VARCHAR', 'status': 'VARCHAR'}},
                    force_not_null = ['email', 'status'])""",
                [str(path)],
            )
    except duckdb.Error as exc:  # no such file, not UTF-8, a row of fewer fields: not the list written
        why = str(exc).strip().splitlines()[0]
        raise UserError(f"{path}: the campaign's list cannot be read back: {why}") from None


def _recipients(store: Store, cid: str, correlation: str) -> tuple[np.ndarray, int | None, int]:
    """One campaign's recipients (``_LIST``) against the run's acceptances and bounces, into tables
    ``_HIT`` and ``_RCPT``: the outcome per recipient (list order), unexpected (header mode; None by
    recipient) and unheaded acceptances."""
    header = correlation == "header"
    # An address listed twice counts on its last row (the lists the runner writes have none twice).
    who = f"(SELECT email, max(rowid) AS i FROM {_LIST} GROUP BY email)"
    acc = f"""(SELECT t, campaign, lower(unnest("to")) AS a FROM {store.kinds((EspAccepted,))})"""
    unexpected = unheaded = 0
    if header:
        # One join for the three: this campaign's acceptances (on the list or not: unexpected) and the
        # unheaded ones for listed addresses; then only the campaign's listed ones are kept.
        store.con.execute(
            f"""CREATE TEMP TABLE {_HIT} AS SELECT who.i, acc.t, acc.campaign IS NULL AS bare
                FROM {acc} AS acc LEFT JOIN {who} AS who ON acc.a = who.email
                WHERE acc.campaign = ? OR (acc.campaign IS NULL AND who.i IS NOT NULL)""",
            [cid],
        )
        unexpected, unheaded = store.one(
            f"SELECT count(*) FILTER (NOT bare AND i IS NULL), count(*) FILTER (bare) FROM {_HIT}"
        )
        store.con.execute(f"DELETE FROM {_HIT} WHERE bare OR i IS NULL")
    else:
        store.con.execute(
            f"""CREATE TEMP TABLE {_HIT} AS SELECT who.i, acc.t FROM {acc} AS acc JOIN {who} AS who
                ON acc.a = who.email"""
        )
    bounced = f"""(SELECT DISTINCT who.i FROM (SELECT lower(unnest(rcpts)) AS a
                   FROM {store.kinds((SutBounced,))}) AS b JOIN {who} AS who ON b.a = who.email)"""
    store.con.execute(
        f"""CREATE TEMP TABLE {_RCPT} AS
            SELECT l.rowid AS i, l.gone, coalesce(p.n, 0) AS n, coalesce(p.first, {NEVER}) AS first,
            (CASE WHEN l.gone THEN (CASE WHEN p.n >= 1 THEN {SUPPRESSED_SENT} ELSE {SUPPRESSED} END)
                  WHEN p.n >= 2 THEN {DUPLICATED} WHEN p.n = 1 THEN {DELIVERED}
                  WHEN b.i IS NOT NULL THEN {BOUNCED} ELSE {MISSING} END)::TINYINT AS outcome
            FROM {_LIST} AS l
            LEFT JOIN (SELECT i, count(*) AS n, min(t) AS first FROM {_HIT} GROUP BY i) AS p ON p.i = l.rowid
            LEFT JOIN {bounced} AS b ON b.i = l.rowid"""
    )
    outcome = store.numpy(f"SELECT outcome FROM {_RCPT} ORDER BY i")["outcome"].astype(np.int8)
    return outcome, (unexpected if header else None), unheaded


def _per_second(store: Store, t0_ns: int, seconds: int) -> np.ndarray:
    """Subscribers first delivered per second from ``t0_ns`` (earlier ones in second 0); as long as the
    run's seconds, or longer when deliveries came after them."""
    got = store.numpy(
        f"""SELECT greatest((first - {int(t0_ns)}) // {_NS}, 0) AS s, count(*) AS c FROM {_RCPT}
            WHERE NOT gone AND n >= 1 GROUP BY s"""
    )
    s = got["s"].astype(np.int64)
    per_s = np.zeros(max(seconds, 1, int(s.max()) + 1 if len(s) else 0), dtype=np.int64)
    per_s[s] = got["c"]
    return per_s


def _windows(store: Store, t0_ns: int, windows: list[Window]) -> list[dict[str, Any]]:
    """Per fault window: the subscribers still owed when it opened, of them those first delivered only
    after it closed (delayed) or never (missing), and the recipients given a second copy from its start
    until the next window's. Every window in one query."""
    if not windows:
        return []
    spans = []
    for k, w in enumerate(windows):
        until = t0_ns + int(windows[k + 1].start_s * _NS) if k + 1 < len(windows) else NEVER
        spans.append(f"({k}, {t0_ns + int(w.start_s * _NS)}, {t0_ns + int(w.end_s * _NS)}, {until})")
    win = f"(VALUES {', '.join(spans)}) AS w(k, s, e, u)"
    owed = dict.fromkeys(range(len(windows)), (0, 0, 0)) | {
        k: (o, d, m)
        for k, o, d, m in store.rows(
            f"""SELECT w.k, count(*), count(*) FILTER (r.n >= 1 AND r.first > w.e),
                count(*) FILTER (r.outcome = {MISSING}) FROM {win}
                JOIN {_RCPT} AS r ON NOT r.gone AND r.first >= w.s GROUP BY w.k"""
        )
    }
    # Second and later copies: every acceptance of a recipient but its first.
    dup = dict(
        store.rows(
            f"""SELECT w.k, count(DISTINCT x.i) FROM {win} JOIN (SELECT i, t FROM (SELECT i, t,
                row_number() OVER (PARTITION BY i ORDER BY t) AS r FROM {_HIT}) WHERE r > 1) AS x
                ON x.t >= w.s AND x.t < w.u GROUP BY w.k"""
        )
    )
    return [
        {
            "name": w.name,
            "start_s": round(w.start_s, 3),
            "end_s": round(w.end_s, 3),
            "owed": int(owed[k][0]),
            "delayed": int(owed[k][1]),
            "missing": int(owed[k][2]),
            "duplicated": int(dup.get(k, 0)),
        }
        for k, w in enumerate(windows)
    ]


def _times(store: Store, trigger_ns: int | None, esp_rate: float | None) -> dict[str, Any]:
    """From the trigger to each subscriber's first delivery: the first, the last (the completion),
    p50/p90/p99 (nearest rank) and the rate; what the ESP's quota alone allows."""
    subscribed, reached = store.one(
        f"SELECT count(*) FILTER (NOT gone), count(*) FILTER (NOT gone AND n >= 1) FROM {_RCPT}"
    )
    # What the ESP's quota alone allows: the shortest the send could take.
    quota = {"at_esp_rate_s": round(subscribed / esp_rate, 3) if esp_rate else None}
    if trigger_ns is None or not reached:
        return {"first_delivery_s": None, "completion_s": None, "rate_per_s": None,
                **dict.fromkeys(_PCTS), **quota}  # fmt: skip
    ranks = {k: rank(reached, q) for k, q in _PCTS.items()}
    lat = f"(SELECT first - {int(trigger_ns)} AS v FROM {_RCPT} WHERE NOT gone AND n >= 1)"
    low, high = store.one(f"SELECT min(v), max(v) FROM {lat}")
    at = dict(
        store.rows(
            f"""SELECT i, v FROM (SELECT v, row_number() OVER (ORDER BY v) AS i FROM {lat})
                WHERE i IN ({", ".join(map(str, sorted(set(ranks.values()))))})"""
        )
    )
    done = float(high) / _NS
    return {
        "first_delivery_s": round(float(low) / _NS, 3),
        "completion_s": round(done, 3),
        "rate_per_s": round(reached / done, 3) if done > 0 else None,
        **{k: round(float(at[r]) / _NS, 3) for k, r in ranks.items()},
        **quota,
    }
