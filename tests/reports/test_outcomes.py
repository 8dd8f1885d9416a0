"""Per-message truth: every submitted message gets exactly one outcome, and the edge cases land right."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.ledger import Kind, LedgerWriter
from mailstorm.reports.analysis import analyze
from mailstorm.reports.ingest import read_columns
from mailstorm.reports.outcomes import OUTCOMES, classify
from tests.strategies import message_fates

NS = 1_000_000_000
T0 = 1_800_000_000 * NS


def test_ground_truth_counts(outage_run):
    """Ledgers built with exactly k lost, m duplicated, b bounced, r rejected, p pending report those."""
    run_dir, truth = outage_run
    outcomes = analyze(run_dir).figures["outcomes"]
    assert outcomes == {
        "submitted": truth.submitted,
        "delivered": truth.delivered,
        "duplicated": truth.duplicated,
        "bounced": truth.bounced,
        "pending": truth.pending,
        "lost": truth.lost,
        "rejected": truth.rejected,
        "uncorrelated": 0,
    }
    assert (truth.lost, truth.duplicated, truth.bounced, truth.rejected) == (3, 2, 4, 5)


def _submit(w: LedgerWriter, mid: str, i: int, ok: bool, code: int | None, attempt: int = 0) -> None:
    intended = T0 + i * NS // 10
    start = intended + attempt * NS
    w.write(Kind.LOAD_SUBMIT, id=mid, intended=intended, start=start, end=start + 5_000_000, ok=ok, code=code,
            text="", phase="done" if ok else "data", target="127.0.0.1:1", worker=0)  # fmt: skip


def test_edge_cases(tmp_path):
    """Timeouts that reached the ESP, retried submissions, unacked acceptances, 5xx then 250, and strays."""
    ledger = tmp_path / "ledger"
    with (
        LedgerWriter(ledger, "load-0") as load,
        LedgerWriter(ledger, "esp-smtp-0") as esp,
        LedgerWriter(ledger, "sut") as sut,
    ):
        # timed out after DATA (ok=false, no code), yet the ESP has it: delivered.
        _submit(load, "timeout-through", 0, False, None)
        esp.write(Kind.ESP_ACCEPTED, id="timeout-through", acked=True)
        # refused once (451), accepted on the second attempt: one message, delivered.
        _submit(load, "retried", 1, False, 451)
        _submit(load, "retried", 1, True, 250, attempt=1)
        esp.write(Kind.ESP_ACCEPTED, id="retried", acked=True)
        # the ESP kept it but the client was cut off (acked=false), then the relay sent it again: duplicated.
        _submit(load, "unacked-resent", 2, True, 250)
        esp.write(Kind.ESP_ACCEPTED, id="unacked-resent", acked=False)
        esp.write(Kind.ESP_ACCEPTED, id="unacked-resent", acked=True)
        # kept with acked=false and never resent: the ESP has it once, delivered.
        _submit(load, "unacked-once", 3, True, 250)
        esp.write(Kind.ESP_ACCEPTED, id="unacked-once", acked=False)
        # refused permanently by the ESP: bounced.
        _submit(load, "hard-5xx", 4, True, 250)
        esp.write(Kind.ESP_REPLIED, id="hard-5xx", code=550, phase="eod")
        # a 5xx, then accepted after all: the acceptance wins, delivered.
        _submit(load, "5xx-then-ok", 5, True, 250)
        esp.write(Kind.ESP_REPLIED, id="5xx-then-ok", code=554, phase="eod")
        esp.write(Kind.ESP_ACCEPTED, id="5xx-then-ok", acked=True)
        # the SUT bounced it itself: bounced.
        _submit(load, "sut-bounce", 6, True, 250)
        sut.write(Kind.SUT_BOUNCED, id="sut-bounce", code=550, text="no")
        # still deferred in the SUT's queue at the deadline: pending.
        _submit(load, "held", 7, True, 250)
        sut.write(Kind.SUT_DEFERRED, id="held", attempt=3, code=451, text="later", retry_in_s=600)
        # accepted and then nothing: lost.
        _submit(load, "vanished", 8, True, 250)
        # deferred once, then relayed with a 250 the ESP never recorded: lost, not pending.
        _submit(load, "relayed-into-void", 11, True, 250)
        sut.write(Kind.SUT_DEFERRED, id="relayed-into-void", attempt=1, code=451, text="later", retry_in_s=1)
        sut.write(Kind.SUT_RELAYED, id="relayed-into-void", attempt=2, code=250)
        # the sender saw a timeout but the SUT logged the acceptance; nothing at the ESP: lost, not rejected.
        _submit(load, "sut-took-it", 9, False, None)
        sut.write(Kind.SUT_ACCEPTED, id="sut-took-it", queue_id="q1")
        # refused by the SUT twice: one rejected message.
        _submit(load, "refused", 10, False, 550)
        _submit(load, "refused", 10, False, 550, attempt=1)
        # abandoned by the generator when it was stopped, never seen downstream: rejected, counted apart.
        load.write(Kind.LOAD_SUBMIT, id="stopped", intended=T0, start=T0, end=T0 + 1, ok=False, code=None,
                   phase="stop")  # fmt: skip
        # a writer that recorded no intended/start/end: its own timestamp stands in for them.
        load.write(Kind.LOAD_SUBMIT, t=T0 + 12 * NS, id="bare", ok=True, code=250)
        esp.write(Kind.ESP_ACCEPTED, t=T0 + 12 * NS + 7_000_000, id="bare", acked=True)
        # the ESP accepted something nobody submitted: not an outcome, but one of the lost messages may be
        # it (its id rewritten on the way): that one is uncorrelated, not known lost.
        esp.write(Kind.ESP_ACCEPTED, id="stray", acked=True)
    with (ledger / "esp-smtp-0.jsonl").open("ab") as fh:
        fh.write(b'{"t":1,"k":"esp.accepted","id":"x"}\n{"t":2,"k":"esp.acc')  # a writer killed mid-line
    with (ledger / "sut.jsonl").open("ab") as fh:
        fh.write(b'{"t":3,"k":"sut.relayed","id":"vanished"}\n{"t": 4, "k": "sut.acc')  # another format

    cols = read_columns(ledger)
    msgs = classify(cols)
    assert cols.torn_lines == 2
    assert msgs.counts() == {
        "submitted": 14,
        "delivered": 5,
        "duplicated": 1,
        "bounced": 2,
        "pending": 1,
        "lost": 1,
        "rejected": 2,
        "uncorrelated": 2,  # "stray" and "x" (below) may be two of the three lost: the earliest two
    }
    fate = _fates(cols, msgs)
    assert {fate[m] for m in ("vanished", "relayed-into-void", "sut-took-it")} == {"lost", "uncorrelated"}
    assert fate["relayed-into-void"] == "lost"  # the SUT took it last: not one the strays may be
    assert msgs.rejected_at_stop == 1
    assert msgs.esp_unmatched == 2  # "stray" and "x"
    assert msgs.unacked == 2
    assert int(msgs.submit_attempts.sum()) == 16
    assert 7.0 in msgs.e2e_ms().tolist()  # "bare": 7 ms from its own timestamp, not from the epoch


def _fates(cols, msgs) -> dict[str, str]:
    """Each submitted id's outcome name (messages are numbered in the order their ids were interned)."""
    ids = cols.table(Kind.LOAD_SUBMIT)["id"]
    return {cols.ids[i]: OUTCOMES[o] for i, o in zip(np.unique(ids[ids >= 0]), msgs.outcome, strict=True)}


def test_broken_correlation_is_uncorrelated_not_lost(tmp_path):
    """Messages the SUT took that never reached the ESP under their id, while the ESP accepted as many
    messages with ids nobody submitted (the pipeline rewrote them), are uncorrelated, not lost; with
    fewer unknown acceptances than such messages, only as many (the earliest taken) are; without any,
    they are lost."""
    for unknown, expected in (
        (0, {"lost": 4}),
        (2, {"lost": 2, "uncorrelated": 2}),
        (6, {"uncorrelated": 4}),
    ):
        ledger = tmp_path / f"unknown-{unknown}" / "ledger"
        with LedgerWriter(ledger, "load-0") as load, LedgerWriter(ledger, "esp-smtp-0") as esp:
            for i in range(4):
                _submit(load, f"m-{i}", i, True, 250)
            _submit(load, "fine", 5, True, 250)
            esp.write(Kind.ESP_ACCEPTED, id="fine", acked=True)
            for n in range(unknown):
                esp.write(Kind.ESP_ACCEPTED, id=f"rewritten-{n}@relay" if n % 2 else None, acked=True)
        cols = read_columns(ledger)
        msgs = classify(cols)
        counts = msgs.counts()
        assert {k: v for k, v in counts.items() if v and k not in ("submitted", "delivered")} == expected
        assert counts["delivered"] == 1 and msgs.esp_unmatched == unknown
        if unknown == 2:
            fate = _fates(cols, msgs)
            assert [fate[f"m-{i}"] for i in range(4)] == ["uncorrelated"] * 2 + ["lost"] * 2


def _write_fates(ledger: Path, fates: list[dict]) -> None:
    with (
        LedgerWriter(ledger, "load-0") as load,
        LedgerWriter(ledger, "esp") as esp,
        LedgerWriter(ledger, "sut") as sut,
    ):
        for i, fate in enumerate(fates):
            mid = f"m-{i}"
            for a, ok in enumerate(fate["attempts"]):
                _submit(load, mid, i, ok, 250 if ok else 451, attempt=a)
            if fate["sut_accepted"]:
                sut.write(Kind.SUT_ACCEPTED, id=mid)
            for _ in range(fate["esp_4xx"]):
                esp.write(Kind.ESP_REPLIED, id=mid, code=451)
            if fate["esp_5xx"]:
                esp.write(Kind.ESP_REPLIED, id=mid, code=550)
            for acked in fate["esp_accepts"]:
                esp.write(Kind.ESP_ACCEPTED, id=mid, acked=acked)
            if fate["sut_bounced"]:
                sut.write(Kind.SUT_BOUNCED, id=mid, code=550)
            if fate["sut_deferred"]:
                sut.write(Kind.SUT_DEFERRED, id=mid, code=451)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(message_fates, min_size=0, max_size=25))
def test_outcome_counts_always_add_up(fates):
    """Whatever the ledgers hold, the outcome counts add up to the messages submitted; acceptances rule."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger"
        ledger.mkdir()
        _write_fates(ledger, fates)
        counts = classify(read_columns(ledger)).counts()
    assert sum(counts[o] for o in OUTCOMES) == counts["submitted"] == len(fates)
    assert counts["duplicated"] == sum(len(f["esp_accepts"]) >= 2 for f in fates)
    assert counts["delivered"] == sum(len(f["esp_accepts"]) == 1 for f in fates)
    never = [f for f in fates if not f["esp_accepts"]]
    assert counts["bounced"] == sum(f["esp_5xx"] or f["sut_bounced"] for f in never)
    took = [
        f
        for f in never
        if not (f["esp_5xx"] or f["sut_bounced"]) and (any(f["attempts"]) or f["sut_accepted"])
    ]
    assert counts["pending"] == sum(f["sut_deferred"] for f in took)
    assert counts["lost"] == sum(not f["sut_deferred"] for f in took)
