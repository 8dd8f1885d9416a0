"""Ledger segments: the writer closes its open segment by size or age, closed segments are compressed
(zstd) behind it, and every reader (LedgerReader, the reports' ingest, the live tail) reads plain and
compressed segments alike, in write order, each record once."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from mailstorm.errors import UserError
from mailstorm.ledger import (
    Kind,
    LedgerReader,
    LedgerWriter,
    SegmentPolicy,
    SutRelayed,
    open_segment,
    segments,
    source_of,
)
from mailstorm.ledger.segments import (
    ZSTD_FAST,
    ZSTD_SMALL,
    compress_segment,
    parse_size,
)
from mailstorm.ledger.tail import LineTail
from mailstorm.reports import build
from mailstorm.reports.analysis import outcome_counts
from mailstorm.reports.spec import ReportSpec
from mailstorm.reports.store import open_run
from mailstorm.reports.synthetic import synthesize
from tests.records import accepted, submit

SMALL = SegmentPolicy(max_bytes=4096)


def _write(writer: LedgerWriter, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        writer.write(submit(str(i), intended=i), t=i)
        writer.write(accepted(str(i)), t=i + 1)


def test_writer_rotates_by_size_compresses_closed_segments_and_readers_read_them_in_order(tmp_path):
    with LedgerWriter(tmp_path, "load-0", policy=SMALL) as w:
        _write(w, 200)
    names = [p.name for p in segments(tmp_path)]
    assert len(names) > 5
    assert names[-1] == "load-0.jsonl"  # the open segment, last and plain
    assert all(n == f"load-0.{i:06d}.jsonl.zst" for i, n in enumerate(names[:-1], 1))
    assert not list(tmp_path.glob("*.tmp"))
    # A second compression of the same segment (a killed writer's child and its successor): harmless.
    assert compress_segment(tmp_path / "load-0.000001.jsonl") == tmp_path / "load-0.000001.jsonl.zst"
    assert {source_of(p) for p in segments(tmp_path)} == {"load-0"}
    # Every closed segment but the open one is under the segment size (plus one record).
    reader = LedgerReader(tmp_path)
    ids = [r["id"] for r in reader.records([Kind.LOAD_SUBMIT])]
    assert ids == [str(i) for i in range(200)] and reader.torn_lines == 0
    typed = [r.id for r in LedgerReader(tmp_path).typed() if r.kind == Kind.ESP_ACCEPTED]
    assert typed == [str(i) for i in range(200)]


def _timed_lines(n: int, rng: random.Random, digest: bool) -> bytes:
    """``n`` ledger-like lines, nanosecond times a few ms apart; with ``digest``, mostly random bytes."""
    t, out = 1_796_002_004_955_690_951, []
    for i in range(n):
        t += rng.randrange(100_000, 5_000_000)
        extra = (
            f',"sha":"{rng.getrandbits(128):032x}","to":["{rng.getrandbits(64):x}@x.test"]' if digest else ""
        )
        out.append(f'{{"k":"sut.relayed","t":{t},"src":"sut","id":"run-0-{i}","code":250{extra}}}\n')
    return "".join(out).encode()


def test_the_optimal_parser_keeps_timed_lines_smaller_and_hardly_random_ones():
    """Why the fake ESP compresses at level 1: lines of times and counters come out >= 10% smaller with
    the optimal parser than at level 1, lines that are mostly a random digest and address hardly so."""
    rng = random.Random(7)
    timed, random_ = _timed_lines(5000, rng, digest=False), _timed_lines(3000, rng, digest=True)
    size = {
        (name, how): len(zstandard.ZstdCompressor(compression_params=p).compress(data))
        for name, data in (("timed", timed), ("random", random_))
        for how, p in (("fast", ZSTD_FAST), ("small", ZSTD_SMALL))
    }
    assert size["timed", "small"] < 0.9 * size["timed", "fast"]
    assert size["random", "small"] > 0.9 * size["random", "fast"]


@pytest.mark.parametrize("fast", [False, True])
def test_a_writers_compressor_child_compresses_as_its_policy_says(tmp_path, fast):
    """By default the child uses the optimal parser (the SUT's lines: >= 10% smaller than level 1 keeps
    them); a ``fast`` policy (the fake ESP's) keeps level 1's bytes. Both read back the same."""
    rng = random.Random(3)
    t = 1_796_002_004_955_690_951
    with LedgerWriter(tmp_path, "sut", policy=SegmentPolicy(max_bytes=256 * 1024, fast=fast)) as w:
        for i in range(12_000):
            t += rng.randrange(100_000, 5_000_000)
            w.write(SutRelayed(id=f"run-0-{i}", attempt=1, code=250), t=t)
    closed = [p for p in segments(tmp_path) if p.name.endswith(".zst")]
    assert len(closed) >= 3
    plain = [b"".join(open_segment_lines_raw(p)) for p in closed]
    level1 = sum(len(zstandard.ZstdCompressor(compression_params=ZSTD_FAST).compress(d)) for d in plain)
    kept = sum(p.stat().st_size for p in closed)
    assert (0.97 * level1 < kept < 1.03 * level1) if fast else (kept < 0.9 * level1)
    assert [r["id"] for r in LedgerReader(tmp_path).records()] == [f"run-0-{i}" for i in range(12_000)]


def open_segment_lines_raw(path: Path) -> list[bytes]:
    with open_segment(path) as fh:
        return list(fh)


def test_the_reports_read_a_rotated_ledger_as_the_same_ledger_unrotated(tmp_path):
    plain, rotated = tmp_path / "plain", tmp_path / "rotated"
    for d, policy in ((plain, SegmentPolicy(max_bytes=0)), (rotated, SMALL)):
        with LedgerWriter(d, "esp-smtp-0", policy=policy) as w:
            _write(w, 300)
    assert len(segments(plain)) == 1 and len(segments(rotated)) > 5
    with open_run(plain) as a, open_run(rotated) as b:
        assert b.esps == a.esps == ["esp"]  # the ESP is named from the source, not the segment's file name
        assert outcome_counts(b) == outcome_counts(a)
        for kind in (Kind.LOAD_SUBMIT, Kind.ESP_ACCEPTED):
            query = f"SELECT t, id, esp_i FROM rec WHERE k = '{kind}' ORDER BY t, id"
            assert b.rows(query) == a.rows(query)


def test_age_closes_a_segment_too(tmp_path):
    with LedgerWriter(tmp_path, "sut", policy=SegmentPolicy(max_bytes=0, max_age_s=0.05)) as w:
        w.write(submit("1", intended=1))
        time.sleep(0.06)  # the age itself is what is tested, not a readiness wait
        w.write(submit("2", intended=2))  # this write finds the segment old: it closes it
        w.write(submit("3", intended=3))
    names = [p.name for p in segments(tmp_path)]
    assert names == ["sut.000001.jsonl.zst", "sut.jsonl"]
    assert [r["id"] for r in LedgerReader(tmp_path).records()] == ["1", "2", "3"]


def test_no_compression_leaves_closed_segments_plain(tmp_path):
    with LedgerWriter(tmp_path, "sut", policy=SegmentPolicy(max_bytes=2048, compress=False)) as w:
        _write(w, 50)
    closed = segments(tmp_path)[:-1]
    assert closed and all(p.suffix == ".jsonl" for p in closed)
    assert len(list(LedgerReader(tmp_path).records([Kind.LOAD_SUBMIT]))) == 50


def test_a_restarted_writer_numbers_on_and_compresses_what_its_predecessor_left_plain(tmp_path):
    with LedgerWriter(tmp_path, "sut", policy=SegmentPolicy(max_bytes=2048, compress=False)) as w:
        _write(w, 40)
    left_plain = len(segments(tmp_path)) - 1
    # A torn last line, as a kill mid-write leaves it.
    with (tmp_path / "sut.jsonl").open("ab") as fh:
        fh.write(b'{"t":1,"k":"load.su')
    with LedgerWriter(tmp_path, "sut", policy=SegmentPolicy(max_bytes=2048)) as w:
        _write(w, 40, start=40)
    paths = segments(tmp_path)
    assert len(paths) > left_plain + 1
    assert all(p.name.endswith(".jsonl.zst") for p in paths[:-1])
    reader = LedgerReader(tmp_path)
    assert [r["id"] for r in reader.records() if r["k"] == Kind.LOAD_SUBMIT] == [str(i) for i in range(80)]
    assert reader.torn_lines == 1


def test_a_plain_segment_compressed_away_after_listing_is_read_from_its_twin(tmp_path):
    with LedgerWriter(tmp_path, "sut", policy=SegmentPolicy(max_bytes=2048, compress=False)) as w:
        _write(w, 30)
    listed = segments(tmp_path)
    compress_segment(listed[0])
    with open_segment(listed[0]) as fh:
        assert fh.readline().startswith(b'{"')
    # Both present (compression under way): listed once, plain.
    (tmp_path / "sut.000001.jsonl").write_bytes(b"")
    assert [p.name for p in segments(tmp_path)].count("sut.000001.jsonl") == 1
    assert "sut.000001.jsonl.zst" not in [p.name for p in segments(tmp_path)]


def test_segments_takes_a_run_directory_too(tmp_path):
    with LedgerWriter(tmp_path / "ledger", "sut") as w:
        w.write(submit("1", intended=1))
    assert segments(tmp_path) == segments(tmp_path / "ledger") == [tmp_path / "ledger" / "sut.jsonl"]


def test_the_tail_reads_each_line_once_across_rotations_between_and_during_polls(tmp_path):
    tail = LineTail(tmp_path)
    seen: list[bytes] = []
    w = LedgerWriter(tmp_path, "load-0", policy=SegmentPolicy(max_bytes=1500))
    try:
        for burst in range(30):
            _write(w, burst % 7, start=burst * 10)  # 0..6 pairs: sometimes none, sometimes several segments
            seen += list(tail.poll())
            if burst % 5 == 0:
                assert w.compressor.wait(30)
    finally:
        w.close()
    seen += list(tail.poll(final=True))
    expect = [line for p in segments(tmp_path) for line in open_segment_lines(p)]
    assert seen == expect and len(expect) == 2 * sum(b % 7 for b in range(30))


def open_segment_lines(path):
    with open_segment(path) as fh:
        return [line.rstrip(b"\n") for line in fh]


def test_the_tail_keeps_a_line_without_its_newline_until_it_ends_and_drops_a_torn_one(tmp_path):
    tail = LineTail(tmp_path)
    path = tmp_path / "sut.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    assert list(tail.poll()) == [b'{"a":1}']
    with path.open("ab") as fh:
        fh.write(b'2}\n{"torn')
    assert list(tail.poll()) == [b'{"b":2}']
    os.rename(path, tmp_path / "sut.000001.jsonl")  # closed with a torn last line
    path.write_bytes(b'{"c":3}\n')
    assert list(tail.poll()) == [b'{"c":3}']


@pytest.mark.parametrize(
    ("env", "expect"),
    [
        ({}, SegmentPolicy()),
        ({"MAILSTORM_LEDGER_SEGMENT": "1MiB"}, SegmentPolicy(max_bytes=1 << 20)),
        (
            {"MAILSTORM_LEDGER_SEGMENT": "0", "MAILSTORM_LEDGER_COMPRESS": "none"},
            SegmentPolicy(0, None, False),
        ),
        ({"MAILSTORM_LEDGER_SEGMENT_AGE": "10m"}, SegmentPolicy(max_age_s=600.0)),
    ],
)
def test_policy_from_the_environment(env, expect):
    assert SegmentPolicy.from_env(env) == expect
    assert SegmentPolicy().max_bytes == 64 * 1024 * 1024  # the documented default


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"MAILSTORM_LEDGER_SEGMENT": "lots"}, "'lots' is not a size"),
        ({"MAILSTORM_LEDGER_SEGMENT_AGE": "soon"}, "'soon' is not a duration"),
        ({"MAILSTORM_LEDGER_SEGMENT_AGE": "0s"}, "MAILSTORM_LEDGER_SEGMENT_AGE='0s'"),
        ({"MAILSTORM_LEDGER_COMPRESS": "gzip"}, "MAILSTORM_LEDGER_COMPRESS='gzip'"),
    ],
)
def test_a_bad_setting_is_a_one_line_error_naming_it(env, names):
    with pytest.raises(UserError, match="ledger segments: ") as exc:
        SegmentPolicy.from_env(env)
    assert names in str(exc.value) and "\n" not in str(exc.value)


def test_sizes():
    assert parse_size("64MB") == 64_000_000 and parse_size("512 KiB") == 512 * 1024
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("12 parsecs")


def test_mailstorm_run_refuses_a_bad_ledger_setting_in_one_line(tmp_path):
    """Every part of a run inherits the runner's environment: a bad setting stops the run at its start."""
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "library" / "smoke.yaml"
    cmd = [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(tmp_path), "--quiet"]
    env = {**os.environ, "MAILSTORM_LEDGER_SEGMENT": "huge"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == UserError.exit_code
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .endswith("ledger segments: 'huge' is not a size (use bytes or a unit: 512KB, 64MB, 1GiB)")
    )
    assert "Traceback" not in proc.stderr and not list(tmp_path.iterdir())


def test_the_reports_read_a_run_whose_ledgers_rotated_and_finds_the_same(tmp_path):
    """The same run twice: its ledgers as written, and re-written into 8 KB segments (compressed, the
    open ones plain); the reports (``mailstorm report``'s build, report.json only) find the same figures."""
    plain, rotated = tmp_path / "plain", tmp_path / "rotated"
    truth = synthesize(plain, rates=(50.0,) * 10, lost=3, duplicated=2, bounced=2, rejected=4, seed=7)
    shutil.copytree(plain, rotated, ignore=shutil.ignore_patterns("*.jsonl"))
    for path in segments(plain):
        with (
            open_segment(path) as fh,
            LedgerWriter(rotated / "ledger", source_of(path), policy=SegmentPolicy(max_bytes=8192)) as w,
        ):
            for line in fh:
                w.write_lines((line,))
    assert len(segments(rotated)) > 2 * len(segments(plain))
    figures = []
    for run in (plain, rotated):
        build(run, report=ReportSpec(formats=("json",)))
        figures.append(orjson.loads((run / "report.json").read_bytes()))
    a, b = figures
    assert a["outcomes"] == b["outcomes"] and a["outcomes"]["lost"] == truth.lost
    assert a["latency_ms"] == b["latency_ms"] and a["series"] == b["series"]
