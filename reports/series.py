"""Per-second series of a run: what was offered, taken, delivered, refused, held and reordered.

Second ``i`` covers ``[t0 + i s, t0 + (i+1) s)`` where ``t0`` is the run's start (``run.started``, else
the earliest intended send). Events are placed by their own time: offered by intended send time
(``load.dropped`` arrivals included: they were offered and never sent), SUT-accepted by the end of the
first successful submission, delivered by the first ESP acceptance, replies by the reply's time.
``backlog[i]`` is the number of messages inside the SUT at the end of second ``i`` (taken, not yet
delivered or bounced). ``reordered[i]`` counts deliveries in second ``i`` of a message intended earlier
than one already delivered (an inversion of the offered order). Latency percentiles per second are
over the messages first delivered in that second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mailstorm.ledger import Kind, RunStarted
from mailstorm.reports.fate import NEVER, Messages
from mailstorm.reports.ingest import Columns

_NS = 1_000_000_000
MAX_SECONDS = 7 * 86_400  # a guard against a stray timestamp stretching the series to years


@dataclass
class Series:
    t0_ns: int
    offered: np.ndarray
    dropped: np.ndarray
    sut_accepted: np.ndarray
    delivered: np.ndarray
    esp_accepted: np.ndarray  # every acceptance record, duplicates included
    esp_replies: dict[str, np.ndarray]  # code ("451", "cut") -> replies per second
    esp_attempts: np.ndarray  # acceptances + replies: what the ESP had to handle
    backlog: np.ndarray
    reordered: np.ndarray
    p50_ms: np.ndarray  # NaN where nothing was delivered
    p95_ms: np.ndarray
    p99_ms: np.ndarray
    queue_depth: np.ndarray | None  # sampled sut.queue depth (last sample per second), when present

    def __len__(self) -> int:
        return len(self.offered)

    def as_dict(self) -> dict[str, list]:
        def clean(a: np.ndarray) -> list:
            if a.dtype.kind != "f":
                return a.tolist()
            return [None if np.isnan(x) else round(float(x), 3) for x in a]

        out = {
            name: clean(getattr(self, name))
            for name in (
                "offered", "dropped", "sut_accepted", "delivered", "esp_accepted", "esp_attempts",
                "backlog", "reordered", "p50_ms", "p95_ms", "p99_ms",
            )
        }  # fmt: skip
        out["esp_replies"] = {code: a.tolist() for code, a in self.esp_replies.items()}
        out["queue_depth"] = None if self.queue_depth is None else clean(self.queue_depth)
        return out


def start_ns(cols: Columns, msgs: Messages) -> int:
    for rec in cols.timeline:
        if isinstance(rec, RunStarted):
            return rec.t
    return int(msgs.intended.min()) if len(msgs.intended) else 0


def build_series(cols: Columns, msgs: Messages, t0_ns: int) -> Series:
    """Bin every event of the run into seconds from ``t0_ns``."""
    ends = [msgs.intended, msgs.sut_in, msgs.left_at]
    esp_t = cols.table(Kind.ESP_ACCEPTED)["t"]
    rep = cols.table(Kind.ESP_REPLIED)
    arrays = [*ends, esp_t, rep["t"]]
    last = max((int(a[a != NEVER].max()) for a in arrays if (a != NEVER).any()), default=t0_ns)
    length = int(min((last - t0_ns) // _NS + 1, MAX_SECONDS))
    length = max(length, 1)

    def sec(t: np.ndarray) -> np.ndarray:
        s = (t[t != NEVER] - t0_ns) // _NS
        return s[(s >= 0) & (s < length)]

    def count(t: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        if weights is None:
            return np.bincount(sec(t), minlength=length)[:length]
        keep = t != NEVER
        s = (t[keep] - t0_ns) // _NS
        w = weights[keep]
        inside = (s >= 0) & (s < length)
        return np.bincount(s[inside], weights=w[inside], minlength=length)[:length].astype(np.int64)

    drop = cols.table(Kind.LOAD_DROPPED)
    dropped = count(drop["intended"], drop["count"]) if len(drop) else np.zeros(length, dtype=np.int64)
    offered = count(msgs.intended) + dropped
    delivered = count(msgs.first_esp)
    replies = {}
    for code in np.unique(rep["code"]):
        replies["cut" if code < 0 else str(int(code))] = count(rep["t"][rep["code"] == code])
    esp_accepted = count(esp_t)
    took = msgs.sut_in != NEVER
    backlog = np.cumsum(count(msgs.sut_in[took])) - np.cumsum(count(msgs.left_at[took]))

    # Reordering: deliveries (in delivery order; at one instant, by intended time: an order the ledgers'
    # file order cannot change) whose intended time is below the running maximum.
    got = np.flatnonzero(msgs.first_esp != NEVER)
    order = got[np.lexsort((msgs.intended[got], msgs.first_esp[got]))]
    intended_in_order = msgs.intended[order]
    running = np.maximum.accumulate(intended_in_order)
    inversions = np.zeros(len(order), dtype=bool)
    inversions[1:] = intended_in_order[1:] < running[:-1]
    reordered = count(msgs.first_esp[order][inversions])

    p50, p95, p99 = _per_second_percentiles(msgs, order, t0_ns, length)
    q = cols.table(Kind.SUT_QUEUE)
    depth = None
    if len(q):
        s = (q["t"] - t0_ns) // _NS
        inside = (s >= 0) & (s < length)
        depth = np.full(length, np.nan)
        depth[s[inside]] = q["depth"][inside]  # later samples overwrite earlier ones in the same second
    return Series(
        t0_ns=t0_ns,
        offered=offered,
        dropped=dropped,
        sut_accepted=count(msgs.sut_in),
        delivered=delivered,
        esp_accepted=esp_accepted,
        esp_replies=replies,
        esp_attempts=esp_accepted + count(rep["t"]),
        backlog=np.maximum(backlog, 0),
        reordered=reordered,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        queue_depth=depth,
    )


def _per_second_percentiles(
    msgs: Messages, order: np.ndarray, t0_ns: int, length: int
) -> tuple[np.ndarray, ...]:
    """Nearest-rank p50/p95/p99 of end-to-end latency per delivery second, vectorised."""
    if len(order) == 0:
        return tuple(np.full(length, np.nan) for _ in range(3))
    s = (msgs.first_esp[order] - t0_ns) // _NS
    lat = (msgs.first_esp[order] - msgs.intended[order]) / 1e6
    inside = (s >= 0) & (s < length)
    s, lat = s[inside], lat[inside]
    # One float sort instead of a lexsort: the second, plus the latency scaled into [0, 1).
    frac = (lat - lat.min()) / (float(np.ptp(lat)) + 1.0) if len(lat) else lat
    srt = np.argsort(s + frac, kind="stable")
    s, lat = s[srt], lat[srt]
    n_per = np.bincount(s, minlength=length)[:length]
    starts = np.concatenate(([0], np.cumsum(n_per)[:-1]))
    out = []
    for q in (0.50, 0.95, 0.99):
        res = np.full(length, np.nan)
        has = n_per > 0
        rank = np.ceil(q * n_per[has]).astype(np.int64) - 1
        res[has] = lat[starts[has] + np.maximum(rank, 0)]
        out.append(res)
    return tuple(out)
