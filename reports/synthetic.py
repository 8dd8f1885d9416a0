"""Synthetic run directories with a known ground truth, for the tests, the benchmark and demos.

``synthesize`` builds a run whose every message's fate is decided up front: arrivals at a per-second
offered rate, a relay with a fixed capacity (a FIFO queue, so backlog and drain follow from it), an
optional ESP outage window during which the relay is refused and holds mail, and exact numbers of
rejected, lost, duplicated, bounced and pending messages. It writes the ledgers the real processes
would write (load, ESP, SUT, timeline) plus ``run.json``, ``slo.json`` and ``scenario.yaml``, and
returns the ``Truth`` the reports must find.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from mailstorm.ledger import (
    LEDGER_SUFFIX,
    SHA_HEX_DIGITS,
    ChaosBegin,
    ChaosEnd,
    EspAccepted,
    EspReplied,
    LedgerWriter,
    LoadSubmit,
    Probe,
    Record,
    RunEnded,
    RunPhase,
    RunStarted,
    SutAccepted,
    SutBounced,
    SutDeferred,
    encode_line,
)
from mailstorm.reports.spec import SloSpec
from mailstorm.runinfo import RunInfo

_NS = 1_000_000_000
T0_NS = 1_800_000_000 * _NS  # a fixed epoch so synthetic runs are byte-for-byte reproducible
_SHA = "0" * SHA_HEX_DIGITS  # the body digest an acceptance carries (no body here)


@dataclass(frozen=True)
class Truth:
    """What the synthetic ledgers hold, by construction."""

    submitted: int
    rejected: int
    delivered: int
    duplicated: int
    bounced: int
    lost: int
    pending: int
    outage: tuple[float, float] | None
    recovered_s: float | None  # seconds after the outage's end when the relay's queue was empty again
    records: int
    uncorrelated: int = 0  # the synthetic pipeline keeps every id: correlation never breaks


def synthesize(
    run_dir: Path,
    *,
    rates: Sequence[float] = (100.0,) * 30,
    capacity: float = 1_000.0,
    latency_ms: float | Sequence[float] = 20.0,
    outage: tuple[float, float] | None = None,
    rejected: int = 0,
    lost: int = 0,
    duplicated: int = 0,
    bounced: int = 0,
    pending: int = 0,
    seed: int = 0,
    shape: dict[str, Any] | None = None,
    slo: SloSpec | None = None,
    bulk: bool = False,
    generator_lag_ms: float = 0.0,
) -> Truth:
    """Write a run directory (ledger/, run.json, slo.json, scenario.yaml) and return its truth.

    ``rates[i]`` messages are intended during second ``i``; the relay forwards at most ``capacity``
    msg/s after ``latency_ms`` (a mean, or one mean per second); during ``outage`` (start_s, end_s)
    the ESP refuses with 451 and the relay delivers the held mail after it; ``generator_lag_ms`` makes
    the load generator start every send that late. ``bulk`` writes the files directly (same format,
    much faster) instead of record by record through ``LedgerWriter``.
    """
    rng = np.random.default_rng(seed)
    run_dir = Path(run_dir)
    ledger = run_dir / "ledger"
    ledger.mkdir(parents=True, exist_ok=True)
    counts = np.asarray(rates, dtype=float).round().astype(np.int64)
    n = int(counts.sum())
    sec = np.repeat(np.arange(len(counts)), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    frac = (np.arange(n) - first) / np.repeat(np.maximum(counts, 1), counts)
    intended = T0_NS + ((sec + frac) * _NS).astype(np.int64)
    # A late generator starts each send generator_lag_ms after its intended time (coordinated omission).
    start = intended + rng.integers(50_000, 400_000, n) + int(generator_lag_ms * 1e6)
    end = start + rng.lognormal(np.log(3e6), 0.3, n).astype(np.int64)

    # Special fates, drawn among messages outside the outage so the outage's own effect stays clean.
    special = _pick(rng, intended, outage, rejected + lost + duplicated + bounced + pending)
    fate = np.zeros(n, dtype=np.int8)  # 0 delivered, 1 rejected, 2 lost, 3 dup, 4 bounced, 5 pending
    cuts = np.cumsum([0, rejected, lost, duplicated, bounced, pending])
    for code, (a, b) in enumerate(pairwise(cuts), start=1):
        fate[special[a:b]] = code

    # The relay: ready after its own latency, refused while the ESP is out, then FIFO at `capacity`.
    # Lognormal relay latency whose mean (not median) is latency_ms, per second when given per second.
    mean_ns = np.broadcast_to(np.asarray(latency_ms, dtype=float), counts.shape)[sec] * 1e6
    ready = end + rng.lognormal(np.log(mean_ns) - 0.25**2 / 2, 0.25).astype(np.int64)
    deferred = np.zeros(n, dtype=bool)
    if outage is not None:
        o_start, o_end = (T0_NS + int(x * _NS) for x in outage)
        deferred = (ready >= o_start) & (ready < o_end)
        ready = np.where(deferred, o_end, ready)
    order = np.argsort(ready, kind="stable")
    step = _NS / capacity
    rank = np.arange(n)
    done_sorted = (rank * step + np.maximum.accumulate(ready[order] - rank * step)).astype(np.int64)
    delivered_at = np.empty(n, dtype=np.int64)
    delivered_at[order] = done_sorted
    recovered_s = None
    if outage is not None:
        # The held mail is gone when a message arriving after the outage no longer queues behind it.
        fresh = ready[order] > o_end
        clear = np.flatnonzero(fresh & (done_sorted - ready[order] < 50_000_000))
        recovered_s = float((done_sorted[clear[0]] - o_end) / _NS) if len(clear) else None

    run_id = "synth"
    ids = [f"{run_id}-{i % 4}-{i}" for i in range(n)]
    out = _Out(ledger, bulk)
    # -- load: one attempt per message; some have a first failed attempt, one timed out but got through.
    ok = fate != 1
    retry_first = np.flatnonzero(fate == 0)[:: max(n // 50, 1)][:5]
    timeout_through = np.flatnonzero(fate == 0)[1 :: max(n // 40, 1)][:3]
    timeout_through = np.setdiff1d(timeout_through, retry_first)
    rows = [
        (
            int(start[i]) - 1_000_000,
            _submit(ids[i], intended[i], start[i] - 2_000_000, start[i] - 1_000_000, False, 451),
        )
        for i in retry_first
    ]
    out.write("load-1", rows)
    tt = set(timeout_through.tolist())
    codes = np.where(ok, 250, 550)
    out.write(
        "load-1",
        (
            (
                int(end[i]),
                _submit(
                    ids[i],
                    intended[i],
                    start[i],
                    end[i],
                    bool(ok[i]) and i not in tt,
                    None if i in tt else codes[i],
                ),
            )
            for i in range(n)
        ),
    )
    # -- SUT: accepted what it acked; bounced and deferred where told.
    sut_ok = np.flatnonzero(ok)
    out.write("sut", ((int(end[i]) - 1000, SutAccepted(id=ids[i], queue_id=int(i) + 1)) for i in sut_ok))
    pend = np.flatnonzero(fate == 5)
    out.write(
        "sut",
        (
            (int(ready[i]), SutDeferred(id=ids[i], attempt=1, code=451, text="4.3.0 later", retry_in_s=3600))
            for i in pend
        ),
    )
    bnc = np.flatnonzero(fate == 4)
    out.write(
        "sut",
        ((int(ready[i]) + 1000, SutBounced(id=ids[i], code=550, text="5.1.1 no such user")) for i in bnc),
    )
    # -- ESP: refusals during the outage (one per held message), permanent refusals, acceptances.
    out.write(
        "esp-smtp-0",
        ((int(end[i]) + 1, _replied(ids[i], 451, "outage")) for i in np.flatnonzero(deferred & ok)),
    )
    out.write("esp-smtp-0", ((int(ready[i]), _replied(ids[i], 550, None)) for i in bnc))
    sent = np.flatnonzero((fate == 0) | (fate == 3))
    out.write("esp-smtp-0", ((int(delivered_at[i]), _accepted(ids[i], acked=fate[i] != 3)) for i in sent))
    dup = np.flatnonzero(fate == 3)
    out.write("esp-smtp-0", ((int(delivered_at[i]) + 2 * _NS, _accepted(ids[i])) for i in dup))
    # -- timeline
    load_end = T0_NS + len(counts) * _NS
    last = int(max(delivered_at.max(initial=load_end), load_end))
    started = RunStarted(run_id=run_id, name="synthetic", seed=seed, duration_s=len(counts))
    out.write("timeline", [(T0_NS, started), (T0_NS, RunPhase(phase="load"))])
    if outage is not None:
        params = {"type": "outage", "duration_s": outage[1] - outage[0]}
        begin = ChaosBegin(name="esp-outage", what="esp_outage", params=params)
        end_ = ChaosEnd(name="esp-outage", what="esp_outage", params=params)
        out.write("timeline", [(o_start, begin), (o_end, end_)])
        health = "http://127.0.0.1/health"
        probes = [
            (
                T0_NS + s * _NS + 500_000_000,
                Probe(
                    url=health,
                    name=health,
                    status=200,
                    latency_s=0.001,
                    ok=not (o_start + 2 * _NS <= T0_NS + s * _NS < o_end + _NS),
                ),
            )
            for s in range(len(counts))
        ]
        out.write("timeline", probes)
    out.write("timeline", [(load_end, RunPhase(phase="drain"))])
    # The drain ends a second after the last delivery, as a runner's drain would when its queue empties.
    out.write(
        "timeline", [(last + _NS, RunPhase(phase="stop")), (last + _NS + 1, RunEnded(reason="drained"))]
    )
    out.close()

    RunInfo(run_id=run_id, name="synthetic", seed=seed, started_ns=T0_NS, endpoints=1).write(run_dir)
    (run_dir / "slo.json").write_text((slo or SloSpec()).model_dump_json(indent=2))
    load = {"duration_s": len(counts), "shape": shape or {"kind": "steady", "rate": float(np.mean(rates))}}
    (run_dir / "scenario.yaml").write_text(json.dumps({"name": "synthetic", "seed": seed, "load": load}))
    return Truth(
        submitted=n,
        rejected=rejected,
        delivered=n - rejected - lost - duplicated - bounced - pending,
        duplicated=duplicated,
        bounced=bounced,
        lost=lost,
        pending=pending,
        outage=outage,
        recovered_s=recovered_s,
        records=out.count,
    )


def _pick(rng: np.random.Generator, intended: np.ndarray, outage, k: int) -> np.ndarray:
    pool = np.arange(len(intended))
    if outage is not None:
        lo, hi = (T0_NS + int((x + d) * _NS) for x, d in zip(outage, (-1, 2), strict=True))
        pool = pool[(intended < lo) | (intended >= hi)]
    if k > len(pool):
        raise ValueError(f"asked for {k} special messages but only {len(pool)} are available")
    return rng.choice(pool, size=k, replace=False)


def _submit(mid: str, intended, start, end, ok: bool, code) -> LoadSubmit:
    return LoadSubmit(
        id=mid,
        intended=int(intended),
        start=int(start),
        end=int(end),
        ok=ok,
        code=None if code is None else int(code),
        text="2.0.0 Ok" if ok else "timeout" if code is None else "refused",
        phase="done" if ok else "data",
        target="127.0.0.1:2525",
        worker=1,
        cls="default",
        size=2048,
        rcpts=1,
    )


def _accepted(mid: str, acked: bool = True) -> EspAccepted:
    return EspAccepted(
        id=mid,
        mid=f"<{mid}@synth>",
        size=2048,
        rcpts=1,
        sha=_SHA,
        proto="smtp",
        api=None,
        peer="127.0.0.1",
        session="s",
        key=None,
        acked=bool(acked),
    )


def _replied(mid: str, code: int, fault: str | None) -> EspReplied:
    text = "4.3.0 try again later" if code < 500 else "5.1.1 no such user"
    return EspReplied(
        proto="smtp", phase="eod", code=code, text=text, fault=fault, session="s", id=mid, peer="127.0.0.1"
    )


class _Out:
    """Writes records either through LedgerWriter (as the processes do) or straight to the files."""

    def __init__(self, ledger: Path, bulk: bool) -> None:
        self.ledger, self.bulk, self.count = ledger, bulk, 0
        self._writers: dict[str, Any] = {}

    def write(self, source: str, rows: Iterable[tuple[int, Record]]) -> None:
        """Write each (t, record) of ``rows`` to ``source``'s ledger, dated ``t``."""
        if source not in self._writers:
            self._writers[source] = (
                (self.ledger / f"{source}{LEDGER_SUFFIX}").open("ab")
                if self.bulk
                else LedgerWriter(self.ledger, source)
            )
        w = self._writers[source]
        if self.bulk:
            buf = []
            for t, rec in rows:
                buf.append(encode_line(rec, t=t, src=source))
                self.count += 1
                if len(buf) >= 100_000:
                    w.write(b"".join(buf))
                    buf.clear()
            if buf:
                w.write(b"".join(buf))
        else:
            for t, rec in rows:
                w.write(rec, t=t)
                self.count += 1

    def close(self) -> None:
        for w in self._writers.values():
            w.close()
