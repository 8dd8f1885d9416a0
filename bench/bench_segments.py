"""Compact ledgers: bytes per message on disk after rotation and compression, and what they cost the fake ESP.

    python bench/bench_segments.py                 # both parts, prints Markdown
    python bench/bench_segments.py --smoke         # small counts, for CI: checks it all runs
    python bench/bench_segments.py --write-docs    # also writes the section into docs/benchmarks.md

1. Bytes per message: a real run (``mailstorm run``, the reference pipeline, steady load, no fault) with
   small segments (``MAILSTORM_LEDGER_SEGMENT``, so that every source closes and compresses several),
   then every source's compressed bytes per line (its closed ``.zst`` segments) applied to all its lines,
   summed over sources, per message submitted: what a run long enough for its open segments to be a
   rounding error keeps on disk. Beside it the same ledger plain (rotation off: today's bytes), and where
   the compressed bytes go: each field's share, as what its source's closed segments shrink by when that
   key is left out of every line (compressed again with the same parameters).
2. Fake ESP msg/s with rotation and compression on (1 MB segments, so that a run closes and compresses
   several while it is measured) vs off (``MAILSTORM_LEDGER_SEGMENT=0``: one plain file), Postfix's
   smtp-source as the client, interleaved, best of ``--repeat`` (bench_smtp's machinery).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
import zstandard

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_smtp import SMTP_SOURCE, FakeEsp, Run, _best_and_cpu, _rows, machine, measure  # noqa: E402
from docs_section import DOC, write_section  # noqa: E402

from mailstorm.ledger import Kind, LedgerReader, open_segment, segments, source_of  # noqa: E402
from mailstorm.ledger.segments import (  # noqa: E402
    SEGMENT_ENV,
    ZSTD_DESCRIPTION,
    ZSTD_FAST,
    ZSTD_SMALL,
)

FIELDS_SHOWN = 6  # per source, the costliest fields by name; the rest summed
SECTION = "## Ledger: bytes per message on disk, segments and zstd"


class SegmentedEsp(FakeEsp):
    """The fake ESP (one process, ledger on, no fault) started with ``MAILSTORM_LEDGER_SEGMENT``."""

    def __init__(self, workdir: Path, segment: str, label: str) -> None:
        super().__init__(1, workdir / label)
        self.segment = segment
        self.name = f"fake ESP, {label} ({SEGMENT_ENV}={segment})"

    def start(self) -> int:
        before = os.environ.get(SEGMENT_ENV)
        os.environ[SEGMENT_ENV] = self.segment  # the child's environment is taken at its start
        try:
            return super().start()
        finally:
            if before is None:
                os.environ.pop(SEGMENT_ENV)
            else:
                os.environ[SEGMENT_ENV] = before


def _lines_and_bytes(path: Path) -> tuple[int, int]:
    lines = size = 0
    with open_segment(path) as fh:
        for raw in fh:
            lines += 1
            size += len(raw)
    return lines, size


def run_sizes(work: Path, rate: int, duration: int, segment: str) -> list[str]:
    """A real run with ``segment``-sized segments; its bytes per message, plain and compressed."""
    scenario = work / "steady.yaml"
    scenario.write_text(
        f"name: ledger-bytes\nseed: 3\nduration: {duration}s\ndrain_deadline: 30s\n"
        f"target: {{kind: reference}}\nload:\n  shape: {{kind: steady, rate: {rate}}}\n"
    )
    out = work / "runs"
    env = {**os.environ, SEGMENT_ENV: segment}
    cmd = [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 300, cwd=ROOT)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"the run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    (run_dir,) = out.iterdir()
    ledger = run_dir / "ledger"
    messages = LedgerReader(ledger).count(Kind.LOAD_SUBMIT)
    per_source: dict[str, dict[str, int]] = {}
    for path in segments(ledger):
        lines, plain = _lines_and_bytes(path)
        s = per_source.setdefault(source_of(path), {"lines": 0, "plain": 0, "zlines": 0, "zbytes": 0})
        s["lines"] += lines
        s["plain"] += plain
        if path.name.endswith(".zst"):
            s["zlines"] += lines
            s["zbytes"] += path.stat().st_size
    rows = [
        "| source | lines | plain bytes / message | compressed bytes / message | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    total_plain = total_z = 0.0
    for source, s in sorted(per_source.items()):
        plain = s["plain"] / messages
        # A source too small to close a segment: counted at the ratio of all closed segments (below).
        z = s["zbytes"] / s["zlines"] * s["lines"] / messages if s["zlines"] else None
        total_plain += plain
        rows.append(
            f"| {source} | {s['lines']:,} | {plain:,.0f} | "
            + (f"{z:,.1f} | {plain / z:.1f}x |" if z else "(no closed segment) | |")
        )
        total_z += z or 0.0
    zsources = [s for s in per_source.values() if s["zlines"]]
    ratio = sum(s["plain"] * s["zlines"] / s["lines"] for s in zsources) / sum(s["zbytes"] for s in zsources)
    small = sum(s["plain"] for s in per_source.values() if not s["zlines"]) / messages
    total_z += small / ratio
    on_disk = sum(p.stat().st_size for p in ledger.iterdir()) / messages
    rows += [
        "",
        f"- {messages:,} messages ({rate} msg/s for {duration} s, reference pipeline, no fault), "
        f"{SEGMENT_ENV}={segment}.",
        f"- plain (rotation off, as before): **{total_plain:,.0f} bytes per message**; after rotation and "
        f"zstd ({ZSTD_DESCRIPTION}): **{total_z:,.1f} bytes per message** (goal <= 80), "
        f"{total_plain / total_z:.1f}x smaller. The sources that closed no segment ({small:,.1f} plain "
        f"bytes per message) are counted at the closed segments' ratio ({ratio:.1f}x).",
        f"- this run's ledger directory as it is, open segments plain: {on_disk:,.0f} bytes per message "
        f"(the open segments are at most one segment per source: a rounding error on a long run).",
    ]
    return [*rows, "", *field_costs(ledger, messages)]


def field_costs(ledger: Path, messages: int) -> list[str]:
    """Per source, the compressed bytes per message each field costs: how much its closed segments
    shrink when the key is left out of every line, scaled to all its lines."""
    closed: dict[str, list[list[dict]]] = {}
    for path in segments(ledger):
        if path.name.endswith(".zst"):
            with open_segment(path) as fh:
                closed.setdefault(source_of(path), []).append([orjson.loads(raw) for raw in fh])
    rows = [
        "Where the compressed bytes go (bytes per message a field costs: its source's closed segments "
        "with and without the key):",
        "",
        "| source | compressed with | bytes / message | costliest fields |",
        "|---|---|---:|---|",
    ]
    for source, segs in sorted(closed.items()):
        fast = source.startswith("esp-")  # the fake ESP's writers: SegmentPolicy.fast
        cctx = zstandard.ZstdCompressor(compression_params=ZSTD_FAST if fast else ZSTD_SMALL)
        scale = _lines_of(ledger, source) / sum(map(len, segs)) / messages
        whole = scale * _compressed(cctx, segs, None)
        keys = {k for seg in segs for r in seg for k in r}
        cost = sorted(((whole - scale * _compressed(cctx, segs, k), k) for k in keys), reverse=True)
        shown = ", ".join(f"`{k}` {c:.1f}" for c, k in cost[:FIELDS_SHOWN])
        rest = sum(c for c, _ in cost[FIELDS_SHOWN:])
        how = "level 1" if fast else "optimal parser"
        rows.append(
            f"| {source} | {how} | {whole:.1f} | {shown}, the other {len(cost) - FIELDS_SHOWN} {rest:.1f} |"
        )
    return rows


def _compressed(cctx: zstandard.ZstdCompressor, segs: list[list[dict]], drop: str | None) -> int:
    """The segments' compressed bytes, written again without the key ``drop``."""
    return sum(
        len(
            cctx.compress(
                b"".join(orjson.dumps({k: v for k, v in r.items() if k != drop}) + b"\n" for r in seg)
            )
        )
        for seg in segs
    )


def _lines_of(ledger: Path, source: str) -> int:
    return sum(_lines_and_bytes(p)[0] for p in segments(ledger) if source_of(p) == source)


def throughput(work: Path, args: argparse.Namespace) -> list[str]:
    off = SegmentedEsp(work, "0", "rotation off")
    on = SegmentedEsp(work, "1MB", "rotation + zstd on")
    results: dict[str, list[Run]] = {off.name: [], on.name: []}
    for i in range(
        args.repeat
    ):  # interleaved, each second repeat in the other order: neither always goes first
        pair = [off, on] if i % 2 == 0 else [on, off]
        for name, runs in measure(pair, args.messages, args.sessions, args.size, 1).items():
            results[name] += runs
    best, cpu = _best_and_cpu(results)
    median = {name: statistics.median(r.rate for r in runs) for name, runs in results.items()}
    pairs = [a.rate / b.rate for a, b in zip(results[on.name], results[off.name], strict=True)]
    closed = [p for p in segments(on.esp.ledger_dir) if p.name.endswith(".zst")]
    return [
        f"Fake ESP, smtp-source, {args.sessions} sessions, {args.messages:,} messages of {args.size} "
        f"bytes per run, best of {args.repeat}, interleaved (every other repeat in the other order).",
        "",
        *_rows(results, "target"),
        "",
        f"- rotation + compression on / off: **{best[on.name] / best[off.name]:.2f}x** msg/s "
        f"(goal >= 0.95x), median / median {median[on.name] / median[off.name]:.2f}x, median of the "
        f"{len(pairs)} pairs {statistics.median(pairs):.2f}x; server CPU per message (the compressor "
        f"child's included) {cpu[on.name] / cpu[off.name]:.2f}x ({len(closed)} segments closed and "
        f"compressed over the {args.repeat} runs)",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="small counts: check that everything runs")
    # ~9 s a run here: the compressor child starts once (~0.1 s CPU)
    p.add_argument("--messages", type=int, default=60_000)
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--rate", type=int, default=200, help="the run's msg/s (part 1)")
    p.add_argument("--duration", type=int, default=60, help="the run's seconds (part 1)")
    p.add_argument("--segment", default="512KB", help="segment size of the run (part 1)")
    p.add_argument(
        "--write-docs", action="store_true", help=f"write the section into {DOC.relative_to(ROOT)}"
    )
    args = p.parse_args(argv)
    if not Path(SMTP_SOURCE).exists():
        raise SystemExit("smtp-source not found: apt-get install postfix")
    if args.smoke:
        args.messages, args.repeat, args.rate, args.duration, args.segment = 2000, 1, 50, 5, "16KB"
    lines = [f"Measured {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {machine()}.", ""]
    with tempfile.TemporaryDirectory(prefix="bench-segments-") as tmp:
        work = Path(tmp)
        lines += run_sizes(work, args.rate, args.duration, args.segment)
        lines += ["", *throughput(work, args)]
    print("\n".join(lines))
    if args.write_docs and not args.smoke:
        write_section(SECTION, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
