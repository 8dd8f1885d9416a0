"""The out-of-core engine (DuckDB over the ledger segments) finds the figures the numpy path finds:
outcome counts, e2e and submission latency percentiles, the per-second series and the details."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from mailstorm.ledger import LedgerWriter, SutHeld, segments
from mailstorm.reports import engine
from mailstorm.reports.analysis import analyze
from mailstorm.reports.fate import MESSAGES_SQL
from mailstorm.reports.synthetic import synthesize
from tests.records import accepted, loose, replied, submit
from tests.reports.test_fate import SYNTHETIC

NS = 1_000_000_000
T0 = 1_800_000_000 * NS


def assert_same_figures(run_dir) -> engine.Core:
    """engine.core(run_dir) equals what analysis.analyze reports for the same run."""
    figures = analyze(run_dir).figures
    core = engine.core(run_dir)
    assert core.counts == figures["outcomes"]
    assert core.e2e == figures["latency_ms"]["e2e"]
    assert core.submit == figures["latency_ms"]["submit"]
    assert {"t0_ns": core.t0_ns, **core.series.as_dict()} == figures["series"]
    details = figures["details"]
    assert (core.submit_attempts, core.unacked) == (details["submit_attempts"], details["esp_unacked"])
    assert (core.rejected_at_stop, core.esp_unmatched) == (
        details["rejected_at_stop"],
        details["esp_unmatched"],
    )
    assert round(core.amplification, 4) == details["esp_attempts_per_message"]
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".engine-")]  # its spill directory is gone
    return core


def test_the_outage_run_has_the_same_figures(outage_run):
    """An outage, a backlog that drains, every bad outcome: the same counts, percentiles and series."""
    run_dir, truth = outage_run
    core = assert_same_figures(run_dir)
    assert core.counts["lost"] == truth.lost and core.series.backlog.max() > 0


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
    core = assert_same_figures(tmp_path)
    assert int(core.series.dropped.sum()) == 9 and core.series.reordered.tolist()[2:5] == [0, 2, 1]
    assert core.series.esp_replies["cut"].sum() == 1 and core.esp_unmatched == 1


def test_zstd_compressed_segments_read_as_the_plain_ones(tmp_path):
    """A closed segment compressed with zstd (``.jsonl.zst``) is read by the engine's loader as its plain
    form is (DuckDB decompresses it itself): the same messages get the same outcomes."""
    synthesize(tmp_path, seed=9, **SYNTHETIC["every-fate"])
    plain = segments(tmp_path / "ledger")
    packed = tmp_path / "packed"
    packed.mkdir()
    with tempfile.TemporaryDirectory() as tmp:
        con = engine.connect(Path(tmp))
        for path in plain:  # re-written by DuckDB as zstd-compressed JSON Lines (the fields the engine reads)
            con.execute(
                f"""COPY (SELECT * FROM read_json('{path}', format = 'newline_delimited'))
                    TO '{packed / path.name}.zst' (FORMAT json, COMPRESSION zstd)"""
            )
        con.close()
    assert sorted(p.name for p in packed.iterdir()) == [f"{p.name}.zst" for p in plain]
    assert (packed / f"{plain[0].name}.zst").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"  # the zstd frame magic

    def outcomes(paths: list[Path]) -> list[tuple]:
        with tempfile.TemporaryDirectory() as tmp:
            con = engine.connect(Path(tmp))
            engine.load(con, paths)
            con.execute(MESSAGES_SQL)
            return con.execute("SELECT id, outcome, first_esp, sut_in FROM msg ORDER BY id").fetchall()

    expected = outcomes(plain)
    assert len(expected) == 1500 and outcomes(sorted(packed.iterdir())) == expected


def test_an_empty_ledger_gives_empty_figures(tmp_path):
    """A run whose ledger directory holds no segments: nothing submitted, no latency, one empty second."""
    (tmp_path / "ledger").mkdir()
    core = assert_same_figures(tmp_path)
    assert core.counts["submitted"] == 0 and core.e2e["count"] == 0 and len(core.series) == 1
