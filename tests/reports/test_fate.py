"""Per-message truth: every submitted message gets exactly one outcome, the edge cases land right, and the
fate module's two forms (incremental for the live view, batch for the reports) count the same."""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.ledger import Kind, LedgerReader, LedgerWriter, SutHeld, SutListed
from mailstorm.reports.analysis import analyze
from mailstorm.reports.fate import OUTCOMES, Fates
from mailstorm.reports.synthetic import synthesize
from tests.records import accepted, bounced, deferred, loose, relayed, replied, submit, sut_accepted
from tests.reports.oracle import classify, read_columns
from tests.strategies import message_fates

NS = 1_000_000_000
T0 = 1_800_000_000 * NS


def live_counts(ledger: Path, *, shuffle_seed: int | None = None) -> dict[str, int]:
    """The incremental form fed every record of ``ledger`` (file by file, or in a shuffled order)."""
    records = list(LedgerReader(ledger).records())
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(records)
    fates = Fates()
    fates.feed_all(records)
    return fates.counts()


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
    w.write(submit(mid, intended=intended, start=start, ok=ok, code=code))


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
        esp.write(accepted("timeout-through"))
        # refused once (451), accepted on the second attempt: one message, delivered.
        _submit(load, "retried", 1, False, 451)
        _submit(load, "retried", 1, True, 250, attempt=1)
        esp.write(accepted("retried"))
        # the ESP kept it but the client was cut off (acked=false), then the relay sent it again: duplicated.
        _submit(load, "unacked-resent", 2, True, 250)
        esp.write(accepted("unacked-resent", acked=False))
        esp.write(accepted("unacked-resent"))
        # kept with acked=false and never resent: the ESP has it once, delivered.
        _submit(load, "unacked-once", 3, True, 250)
        esp.write(accepted("unacked-once", acked=False))
        # refused permanently by the ESP: bounced.
        _submit(load, "hard-5xx", 4, True, 250)
        esp.write(replied("hard-5xx", 550))
        # a 5xx, then accepted after all: the acceptance wins, delivered.
        _submit(load, "5xx-then-ok", 5, True, 250)
        esp.write(replied("5xx-then-ok", 554))
        esp.write(accepted("5xx-then-ok"))
        # the SUT bounced it itself: bounced.
        _submit(load, "sut-bounce", 6, True, 250)
        sut.write(bounced("sut-bounce"))
        # still deferred in the SUT's queue at the deadline: pending.
        _submit(load, "held", 7, True, 250)
        sut.write(deferred("held", attempt=3, retry_in_s=600))
        # accepted and then nothing: lost.
        _submit(load, "vanished", 8, True, 250)
        # deferred once, then relayed with a 250 the ESP never recorded: lost, not pending.
        _submit(load, "relayed-into-void", 11, True, 250)
        sut.write(deferred("relayed-into-void", retry_in_s=1))
        sut.write(relayed("relayed-into-void", attempt=2))
        # deferred, then a relay record without a 2xx: still held, pending.
        _submit(load, "relay-refused", 12, True, 250)
        sut.write(deferred("relay-refused", retry_in_s=1))
        sut.write(relayed("relay-refused", attempt=2, code=451))
        # the sender saw a timeout but the SUT logged the acceptance; nothing at the ESP: lost, not rejected.
        _submit(load, "sut-took-it", 9, False, None)
        sut.write(sut_accepted("sut-took-it", "q1"))
        # refused by the SUT twice: one rejected message.
        _submit(load, "refused", 10, False, 550)
        _submit(load, "refused", 10, False, 550, attempt=1)
        # abandoned by the generator when it was stopped, never seen downstream: rejected, counted apart.
        load.write(submit("stopped", intended=T0, end=T0 + 1, ok=False, code=None, phase="stop"))
        # a writer that recorded no intended/start/end: its own timestamp stands in for them.
        loose(load, Kind.LOAD_SUBMIT, t=T0 + 12 * NS, id="bare", ok=True, code=250)
        esp.write(accepted("bare"), t=T0 + 12 * NS + 7_000_000)
        # the ESP accepted something nobody submitted: not an outcome, but one of the lost messages may be
        # it (its id rewritten on the way): that one is uncorrelated, not known lost.
        esp.write(accepted("stray"))
    with (ledger / "esp-smtp-0.jsonl").open("ab") as fh:
        fh.write(b'{"t":1,"k":"esp.accepted","id":"x"}\n{"t":2,"k":"esp.acc')  # a writer killed mid-line
    with (ledger / "sut.jsonl").open("ab") as fh:
        fh.write(b'{"t":3,"k":"sut.relayed","id":"vanished"}\n{"t": 4, "k": "sut.acc')  # another format

    cols = read_columns(ledger)
    msgs = classify(cols)
    assert cols.torn_lines == 2
    assert msgs.counts() == {
        "submitted": 15,
        "delivered": 5,
        "duplicated": 1,
        "bounced": 2,
        "pending": 2,
        "lost": 1,
        "rejected": 2,
        "uncorrelated": 2,  # "stray" and "x" (below) may be two of the three lost: the earliest two
    }
    assert live_counts(ledger) == msgs.counts()
    fate = _fates(cols, msgs)
    assert {fate[m] for m in ("vanished", "relayed-into-void", "sut-took-it")} == {"lost", "uncorrelated"}
    assert msgs.rejected_at_stop == 1
    assert msgs.esp_unmatched == 2  # "stray" and "x"
    assert msgs.unacked == 2
    assert int(msgs.submit_attempts.sum()) == 17
    assert 7.0 in msgs.e2e_ms().tolist()  # "bare": 7 ms from its own timestamp, not from the epoch


def _write_fates(ledger: Path, fates: list[dict], listing: bool | None = None) -> None:
    """``listing``: the runner's end-of-drain listing of the SUT's queue, complete (True), not (False), or
    none at all (None)."""
    with (
        LedgerWriter(ledger, "load-0") as load,
        LedgerWriter(ledger, "esp") as esp,
        LedgerWriter(ledger, "sut") as sut,
    ):
        if listing is not None:
            sut.write(SutListed(target="reference", held=0, complete=listing))
        for i, fate in enumerate(fates):
            mid = f"m-{i}"
            for a, ok in enumerate(fate["attempts"]):
                _submit(load, mid, i, ok, 250 if ok else 451, attempt=a)
            if fate["sut_accepted"]:
                sut.write(sut_accepted(mid))
            for _ in range(fate["esp_4xx"]):
                esp.write(replied(mid, 451))
            if fate["esp_5xx"]:
                esp.write(replied(mid, 550))
            for acked in fate["esp_accepts"]:
                esp.write(accepted(mid, acked=acked))
            if fate["sut_bounced"]:
                sut.write(bounced(mid))
            if fate["sut_deferred"]:
                sut.write(deferred(mid))
            if fate["sut_relayed"] is not None:
                sut.write(relayed(mid, code=fate["sut_relayed"]))
            if fate["sut_held"]:
                sut.write(SutHeld(id=mid, queue_id=None, target="reference"))
            if fate["stopped"]:
                load.write(submit(mid, intended=T0, start=T0, end=T0 + 1, ok=False, code=None, phase="stop"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(message_fates, min_size=0, max_size=25),
    st.integers(0, 2**32),
    st.sampled_from([None, True, False]),
)
def test_outcome_counts_always_add_up(fates, seed, listing):
    """Whatever the ledgers hold, the outcome counts add up to the messages submitted; acceptances rule;
    and the incremental form, fed the records in any order, counts what the batch form does."""
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Path(tmp) / "ledger"
        ledger.mkdir()
        _write_fates(ledger, fates, listing)
        msgs = classify(read_columns(ledger))
        counts = msgs.counts()
        assert live_counts(ledger, shuffle_seed=seed) == counts
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
    deferral_held = listing is not True  # a complete listing of the queue knows better than a deferral
    held = [f["sut_held"] or (deferral_held and f["sut_deferred"] and f["sut_relayed"] != 250) for f in took]
    assert counts["pending"] == sum(held)
    assert counts["lost"] == len(took) - sum(held)
    rejected = [f for f in never if f not in took and not (f["esp_5xx"] or f["sut_bounced"])]
    assert msgs.rejected_at_stop == sum(f["stopped"] for f in rejected)


SYNTHETIC = {
    "outage": {"rates": [100.0] * 40, "capacity": 300.0, "outage": (10.0, 18.0), "lost": 3, "pending": 2},
    "every-fate": {
        "rates": [50.0] * 30,
        "rejected": 4,
        "lost": 5,
        "duplicated": 3,
        "bounced": 6,
        "pending": 7,
    },
    "bulk-late-generator": {"rates": [200.0] * 20, "generator_lag_ms": 40.0, "lost": 2, "bulk": True},
}


def _fates(cols, msgs) -> dict[str, str]:
    """Each submitted id's outcome name (messages are numbered in the order their ids were interned)."""
    ids = cols.table(Kind.LOAD_SUBMIT)["id"]
    return {cols.ids[i]: OUTCOMES[o] for i, o in zip(np.unique(ids[ids >= 0]), msgs.outcome, strict=True)}


def test_broken_correlation_is_uncorrelated_not_lost(tmp_path):
    """Messages the SUT took that never reached the ESP under their id, while the ESP accepted as many
    messages with ids nobody submitted (the pipeline rewrote them), are uncorrelated, not lost, in both
    forms; with fewer unknown acceptances than such messages, only as many (the earliest taken) are;
    without any, they are lost."""
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
            esp.write(accepted("fine"))
            for n in range(unknown):
                esp.write(accepted(f"rewritten-{n}@relay" if n % 2 else None))
        cols = read_columns(ledger)
        msgs = classify(cols)
        counts = msgs.counts()
        assert {k: v for k, v in counts.items() if v and k not in ("submitted", "delivered")} == expected
        assert counts["delivered"] == 1 and msgs.esp_unmatched == unknown
        assert live_counts(ledger) == counts
        assert live_counts(ledger, shuffle_seed=3) == counts
        if unknown == 2:
            fate = _fates(cols, msgs)
            assert [fate[f"m-{i}"] for i in range(4)] == ["uncorrelated"] * 2 + ["lost"] * 2


@pytest.mark.parametrize("name", SYNTHETIC)
def test_both_forms_count_the_known_answer_ledgers_alike(tmp_path, name):
    """Over ledgers built with a known fate for every message, the incremental form (in the files' order and
    shuffled) and the batch form both find exactly the truth."""
    truth = synthesize(tmp_path, seed=5, **SYNTHETIC[name])
    expected = {k: getattr(truth, k) for k in ("submitted", *OUTCOMES)}
    ledger = tmp_path / "ledger"
    assert classify(read_columns(ledger)).counts() == expected
    assert live_counts(ledger) == expected
    assert live_counts(ledger, shuffle_seed=1) == expected


def test_a_message_the_sut_still_held_at_the_end_is_pending(tmp_path):
    """sut.held (the runner listed it in the SUT's queue) makes a message the SUT took pending, even after a
    2xx relay the ESP never recorded; an ESP acceptance still wins."""
    ledger = tmp_path / "ledger"
    with (
        LedgerWriter(ledger, "load-0") as load,
        LedgerWriter(ledger, "esp") as esp,
        LedgerWriter(ledger, "timeline") as runner,
        LedgerWriter(ledger, "sut") as sut,
    ):
        for i, mid in enumerate(("held", "held-after-relay", "held-but-delivered", "gone")):
            _submit(load, mid, i, True, 250)
        runner.write(SutHeld(id="held", queue_id="A1B2C3", target="postfix"))
        sut.write(relayed("held-after-relay"))
        runner.write(SutHeld(id="held-after-relay", queue_id="q2", target="reference"))
        esp.write(accepted("held-but-delivered"))
        runner.write(SutHeld(id="held-but-delivered", queue_id="q3", target="reference"))
    counts = classify(read_columns(ledger)).counts()
    assert counts == live_counts(ledger)
    assert (counts["pending"], counts["delivered"], counts["lost"]) == (2, 1, 1)


def test_a_complete_listing_makes_a_deferred_message_it_lacks_lost(tmp_path):
    """After sut.listed complete (the runner listed the SUT's whole queue), a message the SUT deferred and
    no longer holds (a wipe, a restore from an older backup) is lost, in both forms and in any order;
    one it lists is pending. An incomplete listing (a queue file it could not name) changes nothing: a
    deferral still counts as held."""
    for complete, expected in ((True, (1, 2)), (False, (3, 0)), (None, (3, 0))):
        ledger = tmp_path / f"listed-{complete}" / "ledger"
        with (
            LedgerWriter(ledger, "load-0") as load,
            LedgerWriter(ledger, "timeline") as runner,
            LedgerWriter(ledger, "sut") as sut,
        ):
            for i, mid in enumerate(("kept", "wiped-1", "wiped-2")):
                _submit(load, mid, i, True, 250)
                sut.write(deferred(mid))
            runner.write(SutHeld(id="kept", queue_id="queue-0:1", target="reference"))
            if complete is not None:
                runner.write(SutListed(target="reference", held=1, complete=complete))
        counts = classify(read_columns(ledger)).counts()
        assert (counts["pending"], counts["lost"]) == expected
        assert live_counts(ledger) == counts
        assert live_counts(ledger, shuffle_seed=7) == counts


def test_the_live_form_keeps_the_runner_free_of_numpy():
    """The runner imports the fate module for its live view; numpy (the batch form's) stays out of it."""
    code = "import sys, mailstorm.harness.run; sys.exit('numpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_e2e_latency_runs_to_the_esps_delivery_when_it_held_the_message(tmp_path):
    """A message the ESP accepted into its backlog ends, for the latency, at its esp.delivered (2 s after
    its intended time), not at its acceptance (10 ms); one without a hold ends at its acceptance. Both
    are delivered once. One the ESP holds with no esp.delivered yet is pending (at the ESP), not
    delivered, in both forms of the fate module."""
    ledger = tmp_path / "ledger"
    t0 = 1_700_000_000_000_000_000
    ms = 1_000_000
    with LedgerWriter(ledger, "load-0") as load:
        for mid in ("held", "plain", "still-held"):
            load.write(submit(mid, intended=t0))
    with LedgerWriter(ledger, "esp-smtp-0") as esp:
        loose(esp, "esp.accepted", t=t0 + 10 * ms, id="plain", acked=True)
        for mid in ("held", "still-held"):
            loose(esp, "esp.accepted", t=t0 + 10 * ms, id=mid, acked=True, held=True)
        loose(esp, "esp.delivered", t=t0 + 2000 * ms, id="held", fault="q", held_s=1.99, proto="smtp")
    msgs = classify(read_columns(ledger))
    counts = msgs.counts()
    assert (counts["delivered"], counts["pending"]) == (2, 1)
    assert live_counts(ledger) == counts
    fates = Fates()
    fates.feed_all(LedgerReader(ledger).records())
    assert fates.unsettled == 1  # the drain waits for the ESP's backlog too
    assert sorted(msgs.e2e_ms().tolist()) == [10.0, 2000.0]  # the one still held: no latency yet
