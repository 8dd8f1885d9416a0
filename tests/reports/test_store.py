"""The reports' DuckDB path (mailstorm.reports.store and the SQL over it) finds the figures the numpy
oracle finds (tests/reports/oracle.py: the reports' former path, every record in memory): outcome
counts, e2e and submission latency percentiles, the per-second series and the details; and it reads
what the ledger contract says a reader must (torn lines, older lines, compressed segments)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
import zstandard

from mailstorm.errors import UserError
from mailstorm.ledger import EspWebhook, LedgerWriter, SutHeld, segments
from mailstorm.reports.analysis import analyze
from mailstorm.reports.store import open_run
from mailstorm.reports.synthetic import synthesize
from tests.records import accepted, loose, replied, submit
from tests.reports import oracle
from tests.reports.test_fate import SYNTHETIC

NS = 1_000_000_000
T0 = 1_800_000_000 * NS


@dataclass
class Found:
    counts: dict[str, int]
    series: oracle.Series
    esp_unmatched: int


def assert_same_figures(run_dir) -> Found:
    """analysis.analyze(run_dir) reports what the numpy oracle finds for the same run."""
    figures = analyze(run_dir).figures
    cols = oracle.read_columns(run_dir / "ledger")
    msgs = oracle.classify(cols)
    assert figures["outcomes"] == msgs.counts()
    assert figures["latency_ms"]["e2e"] == oracle.percentiles(msgs.e2e_ms())
    assert figures["latency_ms"]["submit"] == oracle.percentiles(msgs.submit_ms())
    t0 = figures["run"]["started_ns"]
    series = oracle.build_series(cols, msgs, t0)
    assert figures["series"] == {"t0_ns": t0, **series.as_dict()}
    details = figures["details"]
    reached = msgs.esp_attempts > 0
    amplification = float(msgs.esp_attempts[reached].mean()) if reached.any() else 1.0
    assert details["submit_attempts"] == int(msgs.submit_attempts.sum())
    assert (details["esp_unacked"], details["rejected_at_stop"], details["esp_unmatched"]) == (
        msgs.unacked,
        msgs.rejected_at_stop,
        msgs.esp_unmatched,
    )
    assert details["esp_attempts_per_message"] == round(amplification, 4)
    assert (figures["run"]["torn_lines"], figures["run"]["ledger_files"]) == (cols.torn_lines, cols.files)
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".store-")]  # its spill directory is gone
    return Found(msgs.counts(), series, msgs.esp_unmatched)


def test_the_outage_run_has_the_same_figures(outage_run):
    """An outage, a backlog that drains, every bad outcome: the same counts, percentiles and series."""
    run_dir, truth = outage_run
    found = assert_same_figures(run_dir)
    assert found.counts["lost"] == truth.lost and found.series.backlog.max() > 0


@pytest.mark.parametrize("name", SYNTHETIC)
def test_the_synthetic_runs_have_the_same_figures(tmp_path, name):
    """Each synthetic known-answer run: the same figures both ways."""
    synthesize(tmp_path, seed=3, **SYNTHETIC[name])
    assert_same_figures(tmp_path)


def test_dropped_arrivals_queue_samples_cuts_and_held_mail_have_the_same_figures(tmp_path):
    """Records the synthetic runs lack: load.dropped (offered, never sent), sut.queue samples, a cut
    connection (a reply with no code), an ESP backlog (esp.delivered), sut.held, an acceptance of an id
    never submitted, and two deliveries at one instant in the opposite order to their intended times."""
    ledger = tmp_path / "ledger"
    with LedgerWriter(ledger, "load-0") as load, LedgerWriter(ledger, "esp-smtp-0") as esp:
        for i in range(6):
            load.write(submit(f"m-{i}", intended=T0 + i * NS // 4), t=T0 + i * NS // 4 + 5_000_000)
        loose(load, "load.dropped", t=T0 + NS, intended=T0 + NS, count=7, loop_lag_ms=3.5)
        loose(load, "load.dropped", t=T0 + 2 * NS, intended=T0 + 2 * NS, count=2)
        esp.write(accepted("m-1"), t=T0 + 3 * NS)  # m-1 and m-0: after m-3 and m-4, intended before them
        esp.write(accepted("m-0"), t=T0 + 3 * NS)  # (at one instant: ordered by intended time)
        esp.write(accepted("m-3"), t=T0 + 2 * NS)
        esp.write(accepted("m-2"), t=T0 + 4 * NS)  # after m-3, intended before it: reordered
        loose(esp, "esp.accepted", t=T0 + 2 * NS, id="m-4", acked=True, held=True)
        loose(esp, "esp.delivered", t=T0 + 5 * NS, id="m-4", fault="q", held_s=3.0, proto="smtp")
        esp.write(replied("m-5", None), t=T0 + 2 * NS)
        esp.write(accepted("rewritten"), t=T0 + 6 * NS)
    with LedgerWriter(ledger, "sut") as sut:
        for s, depth in ((0, 1), (1, 2), (1, 4), (3, 0)):  # in time order, as sampled
            loose(sut, "sut.queue", t=T0 + s * NS + depth, depth=depth)
        sut.write(SutHeld(id="m-5", queue_id=None, target="reference"), t=T0 + 6 * NS)
    found = assert_same_figures(tmp_path)
    assert int(found.series.dropped.sum()) == 9 and found.series.reordered.tolist()[2:5] == [0, 2, 1]
    assert found.series.esp_replies["cut"].sum() == 1 and found.esp_unmatched == 1


def test_zstd_compressed_segments_read_as_the_plain_ones(tmp_path):
    """A closed segment compressed with zstd (``.jsonl.zst``) is read by the store as its plain form is
    (DuckDB decompresses it itself): the same messages get the same outcomes."""
    synthesize(tmp_path, seed=9, **SYNTHETIC["every-fate"])
    plain = segments(tmp_path / "ledger")
    packed = tmp_path / "packed"
    packed.mkdir()
    for path in plain:  # closed segments, as the ledger's own compressor leaves them
        closed = packed / f"{path.stem}.000001.jsonl.zst"
        closed.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    assert segments(packed) == sorted(packed.iterdir()) and len(segments(packed)) == len(plain)
    assert segments(packed)[0].read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic

    def outcomes(ledger: Path) -> list[tuple]:
        with open_run(ledger) as store:
            return store.rows("SELECT id, outcome, first_esp, sut_in FROM msg ORDER BY id")

    expected = outcomes(tmp_path / "ledger")
    assert len(expected) == 1500 and outcomes(packed) == expected


def test_an_empty_ledger_gives_empty_figures(tmp_path):
    """A run whose ledger directory holds no segments: nothing submitted, no latency, one empty second."""
    (tmp_path / "ledger").mkdir()
    found = assert_same_figures(tmp_path)
    assert found.counts["submitted"] == 0 and len(found.series) == 1
    assert analyze(tmp_path).figures["latency_ms"]["e2e"]["count"] == 0


def test_torn_foreign_and_damaged_lines(tmp_path):
    """A torn line in the middle (a restarted writer ended it) and at the end, a blank line, a JSON value
    that is no record, a kind this version does not know with odd types: counted or ignored as the
    ledger contract says, the messages around them read; a known kind with a value of the wrong type
    is an error naming its file."""
    ledger = tmp_path / "ledger"
    with LedgerWriter(ledger, "load-0") as load:
        load.write(submit("m-0", intended=T0), t=T0 + 1)
    path = ledger / "load-0.jsonl"
    with path.open("ab") as fh:
        fh.write(b'{"k":"load.sub\n\n[1, 2]\n{"k":"x.future","t":"soon","count":"many"}\n{"no":"kind"}\n')
    with LedgerWriter(ledger, "load-0") as load:
        load.write(submit("m-1", intended=T0 + NS), t=T0 + NS + 1)
    with path.open("ab") as fh:
        fh.write(b'{"k":"load.submit","t":17')
    found = assert_same_figures(tmp_path)
    assert found.counts["submitted"] == 2
    with open_run(ledger) as store:
        assert store.torn_lines == 4  # the two torn lines, the list and the object without a kind
    whole = path.read_bytes()
    with path.open("ab") as fh:
        fh.write(b'\n{"k":"load.submit","t":18,"id":"m-2","intended":"later"}\n')
    wrong = r"load-0.jsonl: records with a value of the wrong type: load.submit \(1\)"
    with pytest.raises(UserError, match=wrong):
        open_run(ledger)
    path.write_bytes(whole)  # (the fixture that checks both fate forms on every ledger a test leaves)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".store-")]


def test_a_value_a_section_reads_again_that_duckdb_cannot_cast_is_named(tmp_path):
    """What only some sections read (Store.kinds: webhook events here) is read strictly too: a value of
    the wrong type is a one-line error naming the file and line, not a NULL taken silently."""
    ledger = tmp_path / "ledger"
    with LedgerWriter(ledger, "load-0") as load:
        load.write(submit("m-0", intended=T0), t=T0 + 1)
    hook = {"k": "esp.webhook", "t": T0 + 2, "api": "sendgrid", "event": "delivered", "id": "m-0",
            "esp_id": None, "rcpt": "a@b.test", "event_id": "e-1", "url": "http://127.0.0.1:1/h",
            "status": 200, "attempt": 1, "fault": None, "copy": 0, "ok": True}  # fmt: skip
    path = ledger / "esp-webhooks.jsonl"
    path.write_bytes(orjson.dumps(hook) + b"\n")
    with open_run(ledger) as store:
        assert store.value(f"SELECT attempt FROM {store.kinds((EspWebhook,))}") == 1
    path.write_bytes(orjson.dumps({**hook, "attempt": "first"}) + b"\n")
    with open_run(ledger) as store, pytest.raises(UserError, match=r"esp-webhooks.jsonl.*line 1"):
        store.kinds((EspWebhook,))
    path.write_bytes(orjson.dumps(hook) + b"\n")  # (the fixture that checks both fate forms on every ledger)
