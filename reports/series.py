"""Per-second series of a run: what was offered, taken, delivered, refused, held and reordered.

Second ``i`` covers ``[t0 + i s, t0 + (i+1) s)`` where ``t0`` is the run's start (``run.started``, else
the earliest intended send). Events are placed by their own time: offered by intended send time
(``load.dropped`` arrivals included: they were offered and never sent), SUT-accepted by the end of the
first successful submission, delivered by the first ESP acceptance, replies by the reply's time.
``backlog[i]`` is the number of messages inside the SUT at the end of second ``i`` (taken, not yet
delivered or bounced). ``reordered[i]`` counts deliveries in second ``i`` of a message intended earlier
than one already delivered (an inversion of the offered order). Latency percentiles per second are
over the messages first delivered in that second.

Computed in DuckDB from a ``Store`` (reports/store.py): Python holds one value per second, never one per
message.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mailstorm.ledger import Kind, RunStarted
from mailstorm.reports.fate import NEVER
from mailstorm.reports.store import Store

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


def start_ns(store: Store, started_ns: int | None = None) -> int:
    """The run's zero: the timeline's ``run.started``, else ``started_ns`` (run.json's), else the earliest
    intended send, else 0."""
    for rec in store.timeline:
        if isinstance(rec, RunStarted):
            return rec.t
    if started_ns:
        return started_ns
    first = store.value("SELECT min(intended) FROM msg")
    return 0 if first is None else int(first)


def build_series(store: Store, t0: int) -> Series:
    """Bin every event of the run into seconds from ``t0``."""
    last = store.value(
        f"""SELECT max(x) FROM (
              SELECT greatest(intended, CASE WHEN sut_in != {NEVER} THEN sut_in END,
                              CASE WHEN left_at != {NEVER} THEN left_at END) AS x FROM msg
              UNION ALL SELECT max(t) FROM rec WHERE k IN ('{Kind.ESP_ACCEPTED}', '{Kind.ESP_REPLIED}')
                  AND NOT (k = '{Kind.ESP_ACCEPTED}' AND campaign IS NOT NULL))"""
    )
    last = t0 if last is None else int(last)
    n = max(int(min((last - t0) // _NS + 1, MAX_SECONDS)), 1)

    def count(col: str, where: str = "true", table: str = "msg") -> np.ndarray:
        return store.per_second(f"SELECT {col} AS t FROM {table} WHERE {where}", t0, n)

    esp = f"k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL"
    rep = f"k = '{Kind.ESP_REPLIED}'"
    dropped = store.per_second(
        f"""SELECT coalesce(intended, 0) AS t, coalesce("count", 0) AS c FROM rec
            WHERE k = '{Kind.LOAD_DROPPED}'""",
        t0,
        n,
        weight="c",
    )
    replies = {}
    for (code,) in store.rows(f"SELECT DISTINCT coalesce(code, -1) AS c FROM rec WHERE {rep} ORDER BY c"):
        replies["cut" if code < 0 else str(int(code))] = count(
            "t", f"{rep} AND coalesce(code, -1) = {code}", "rec"
        )
    esp_accepted = count("t", esp, "rec")
    took = f"sut_in != {NEVER}"
    backlog = np.cumsum(count("sut_in", took)) - np.cumsum(count("left_at", took))
    # Reordering: deliveries in delivery order (ties by intended time) intended before one delivered earlier.
    reordered = count(
        "first_esp",
        "inverted",
        f"""(SELECT first_esp, intended < max(intended) OVER (ORDER BY first_esp, intended
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS inverted
            FROM msg WHERE first_esp != {NEVER})""",
    )
    p50, p95, p99 = _per_second_percentiles(store, t0, n)
    depth = None
    if store.value(f"SELECT count(*) FROM rec WHERE k = '{Kind.SUT_QUEUE}'"):
        depth = np.full(n, np.nan)
        # The last sample of each second (a later one overwrites an earlier one).
        got = store.numpy(
            f"""SELECT s, arg_max(coalesce(depth, 0), t) AS d FROM (SELECT (t - {t0}) // {_NS} AS s, depth, t
                FROM rec WHERE k = '{Kind.SUT_QUEUE}' AND t >= {t0}) WHERE s < {n} GROUP BY s"""
        )
        depth[got["s"].astype(np.int64)] = got["d"]
    return Series(
        t0_ns=t0,
        offered=count("intended") + dropped,
        dropped=dropped,
        sut_accepted=count("sut_in"),
        delivered=count("first_esp"),
        esp_accepted=esp_accepted,
        esp_replies=replies,
        esp_attempts=esp_accepted + count("t", rep, "rec"),
        backlog=np.maximum(backlog, 0),
        reordered=reordered,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        queue_depth=depth,
    )


def _per_second_percentiles(store: Store, t0: int, n: int) -> tuple[np.ndarray, ...]:
    """Nearest-rank p50/p95/p99 of end-to-end latency (first acceptance - intended) per delivery second."""
    got = store.numpy(
        f"""WITH d AS (SELECT (first_esp - {t0}) // {_NS} AS s, (first_esp - intended) / 1e6 AS lat
                       FROM msg WHERE first_esp != {NEVER} AND first_esp >= {t0}),
            r AS (SELECT s, lat, row_number() OVER (PARTITION BY s ORDER BY lat) AS i,
                         count(*) OVER (PARTITION BY s) AS n FROM d WHERE s < {n})
            SELECT s, i, n, lat FROM r
            WHERE i IN (greatest(ceil(0.5 * n), 1), greatest(ceil(0.95 * n), 1),
                        greatest(ceil(0.99 * n), 1))"""
    )
    out = tuple(np.full(n, np.nan) for _ in range(3))
    s, i, cnt, lat = (got[c] for c in ("s", "i", "n", "lat"))
    for arr, q in zip(out, (0.50, 0.95, 0.99), strict=True):
        pick = i == np.maximum(np.ceil(q * cnt), 1)
        arr[s[pick].astype(np.int64)] = lat[pick]
    return out
