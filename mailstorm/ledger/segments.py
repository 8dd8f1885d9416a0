"""A ledger source's segments: how they are named, listed in order, opened and compressed.

One writing process and source (``esp-smtp-0``, ``load-1``, ``sut``...) writes one *open segment*,
``<source>.jsonl``, as it always has. When that file reaches the segment size (``SegmentPolicy``) the
writer closes it by renaming it ``<source>.<seq>.jsonl`` (``seq`` six digits from 000001, in write order)
and opens a fresh ``<source>.jsonl``; a child process of the writer's (``Compressor``) then compresses
the closed segment to ``<source>.<seq>.jsonl.zst`` (zstd) and removes the plain one. A run shorter than one
segment therefore keeps exactly the files it had before segments existed.

Readers go through ``segments`` (every segment of a ledger directory, source by source, each source's
closed segments in order and its open segment last) and ``open_segment`` (plain or zstd alike, and the
compressed twin when the plain file was compressed away between listing and opening), so that no
reader globs ``*.jsonl`` itself. ``source_of`` names the source a segment belongs to.

Settings, read from the environment of each writing process (the runner's children inherit the
runner's): ``MAILSTORM_LEDGER_SEGMENT`` the size a segment closes at (``64MB`` by default, ``0`` never:
one file per source, uncompressed, as before), ``MAILSTORM_LEDGER_SEGMENT_AGE`` an age a segment also
closes at (a duration: ``10m``; unset by default), ``MAILSTORM_LEDGER_COMPRESS`` ``zstd`` (default) or
``none`` (closed segments stay plain).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from mailstorm.durations import parse_duration
from mailstorm.errors import UserError

LEDGER_SUFFIX = ".jsonl"
ZSTD_SUFFIX = ".zst"
SEGMENT_ENV = "MAILSTORM_LEDGER_SEGMENT"
SEGMENT_AGE_ENV = "MAILSTORM_LEDGER_SEGMENT_AGE"
COMPRESS_ENV = "MAILSTORM_LEDGER_COMPRESS"
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
# Two ways to compress, chosen by the writer (``SegmentPolicy.fast``). Measured on a real run's ledgers
# (bench/bench_segments.py: 12,000 messages, every source, 512 KB segments, the body digest at 128 bits):
# levels 1 / 3 / 9 / 15 keep 85.1 / 92.6 / 83.6 / 82.9 bytes a message at 750 / 690 / 130 / 55 MB/s,
# level 19 68.7 at 3 MB/s; zstd's optimal parser with small tables (ZSTD_SMALL) 71.2 at 26 MB/s. The
# optimal parser is what shrinks the lines: each nanosecond time shares a prefix with the one before,
# and only a parser that prices every match takes those short ones (target_length under 64 loses it: 32
# keeps 84); its search depth and table sizes hardly matter (71.1 to 71.4 from chain 2^8 to 2^14, search
# 1 or 2). It keeps the load's and the SUT's lines 25% and 28% smaller than level 1, the fake ESP's
# only 5% (they are mostly a digest and an address, random bytes) for ~14 us of CPU a message, ~10% of
# what the fake ESP spends on one at its full rate: the fake ESP's writers compress at level 1
# (ZSTD_FAST), as the throughput a run measures is theirs.
ZSTD_FAST = zstandard.ZstdCompressionParameters.from_level(1)
ZSTD_SMALL = zstandard.ZstdCompressionParameters(
    window_log=19,
    chain_log=12,
    hash_log=16,
    search_log=1,
    min_match=5,
    target_length=256,
    strategy=zstandard.STRATEGY_BTOPT,
)
ZSTD_DESCRIPTION = "zstd's optimal parser (btopt, window 2^19, target length 256); the fake ESP's at level 1"
"""The choice in a few words (bench/bench_segments.py prints it beside the bytes kept)."""
_READ_BLOCK = 4 << 20

_NAME = re.compile(r"^(?P<source>.+?)(?:\.(?P<seq>\d{6}))?\.jsonl(?P<zst>\.zst)?$")
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_size(value: str) -> int:
    """``"64MB"`` / ``"512KiB"`` / ``"1000000"`` -> bytes."""
    m = _SIZE.match(value.lower())
    if m is None or m.group(2) not in _UNITS:
        raise ValueError(f"{value!r} is not a size (use bytes or a unit: 512KB, 64MB, 1GiB)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True)
class SegmentPolicy:
    """When a writer closes its open segment, and whether closed segments are compressed."""

    max_bytes: int = DEFAULT_SEGMENT_BYTES  # 0: never by size
    max_age_s: float | None = None  # None: never by age
    compress: bool = True
    fast: bool = False  # compress at zstd level 1 (ZSTD_FAST), not with the optimal parser: the fake ESP

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str] = os.environ) -> SegmentPolicy:
        """The policy the environment sets (unset variables: the defaults); a bad value is a
        ``UserError`` naming the variable."""
        try:
            size = env.get(SEGMENT_ENV)
            max_bytes = DEFAULT_SEGMENT_BYTES if size is None else parse_size(size)
            age = env.get(SEGMENT_AGE_ENV)
            max_age_s = None if not age else float(parse_duration(age))
            if max_age_s is not None and max_age_s <= 0:
                raise ValueError(f"{SEGMENT_AGE_ENV}={age!r}: an age must be above zero")
        except ValueError as exc:
            raise UserError(f"ledger segments: {exc}") from None
        compress = env.get(COMPRESS_ENV, "zstd").strip().lower()
        if compress not in ("zstd", "none"):
            raise UserError(f"ledger segments: {COMPRESS_ENV}={compress!r}: use zstd or none")
        return cls(max_bytes=max_bytes, max_age_s=max_age_s, compress=compress == "zstd")


def source_of(path: Path) -> str:
    """The source a segment file belongs to: ``esp-smtp-0`` for ``esp-smtp-0.000003.jsonl.zst``."""
    m = _NAME.match(path.name)
    return m.group("source") if m else path.stem


def closed_path(directory: Path, source: str, seq: int) -> Path:
    return directory / f"{source}.{seq:06d}{LEDGER_SUFFIX}"


def parse_name(name: str) -> tuple[str, int | None, bool] | None:
    m = _NAME.match(name)
    if m is None:
        return None
    seq = m.group("seq")
    return m.group("source"), None if seq is None else int(seq), m.group("zst") is not None


def closed_seqs(directory: Path, source: str) -> list[int]:
    """The numbers of ``source``'s closed segments in ``directory`` (plain or compressed), ascending."""
    seqs = set()
    for path in directory.glob(f"{glob_escape(source)}.*{LEDGER_SUFFIX}*"):
        parsed = parse_name(path.name)
        if parsed and parsed[0] == source and parsed[1] is not None:
            seqs.add(parsed[1])
    return sorted(seqs)


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def ledger_dir_of(path: str | os.PathLike[str]) -> Path:
    """``path`` itself when it holds ledger files, else its ``ledger/`` folder (a run directory)."""
    path = Path(path)
    sub = path / "ledger"
    if sub.is_dir() and not any(path.glob(f"*{LEDGER_SUFFIX}*")):
        return sub
    return path


def segments(path: str | os.PathLike[str]) -> list[Path]:
    """Every ledger segment of a ledger directory (or of a run directory's ``ledger/``), in reading
    order: sources by name, each source's closed segments by number, then its open segment. A closed
    segment present both plain and compressed (compression under way) is listed once, plain."""
    directory = ledger_dir_of(path)
    found: dict[tuple[str, float], Path] = {}
    for entry in directory.glob(f"*{LEDGER_SUFFIX}*"):
        parsed = parse_name(entry.name)
        if parsed is None:
            continue  # a compressor's temporary file, or a stranger
        source, seq, zst = parsed
        if seq is None and zst:
            continue  # only closed segments are compressed
        slot = (source, float("inf") if seq is None else seq)
        if slot not in found or not zst:
            found[slot] = entry
    return [found[slot] for slot in sorted(found)]


@contextlib.contextmanager
def open_segment(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading its lines, decompressed when it is a ``.zst``; a plain closed
    segment compressed away since it was listed is read from its ``.zst`` twin."""
    try:
        raw = path.open("rb", buffering=_READ_BLOCK)
    except FileNotFoundError:
        parsed = parse_name(path.name)
        if parsed is None or parsed[1] is None or parsed[2]:
            raise
        path = path.with_name(path.name + ZSTD_SUFFIX)
        raw = path.open("rb")
    with raw:
        if path.suffix != ZSTD_SUFFIX:
            yield raw  # type: ignore[misc]
            return
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=_READ_BLOCK)
        with io.BufferedReader(reader, buffer_size=_READ_BLOCK) as fh:  # type: ignore[arg-type]
            yield fh  # type: ignore[misc]


def compress_segment(
    path: Path, *, fsync: bool = False, params: zstandard.ZstdCompressionParameters = ZSTD_SMALL
) -> Path:
    """Compress the closed segment ``path`` to ``path.zst`` and remove ``path``; the ``.zst`` appears
    whole (written aside, then renamed), so a reader sees one of the two at every moment. Two processes
    at it at once (a restarted writer and its killed predecessor's child) each write their own temporary
    file and rename the same bytes into place."""
    target = path.with_name(path.name + ZSTD_SUFFIX)
    tmp = path.with_name(f"{path.name}{ZSTD_SUFFIX}.{os.getpid()}.tmp")
    cctx = zstandard.ZstdCompressor(compression_params=params)
    try:
        src = path.open("rb")
    except FileNotFoundError:
        if target.exists():
            return target  # the other one finished first
        raise
    with src, tmp.open("wb") as dst:
        cctx.copy_stream(src, dst, size=os.fstat(src.fileno()).st_size)
        if fsync:
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(tmp, target)
    path.unlink(missing_ok=True)
    return target


class Compressor:
    """Compresses one writer's closed segments in one long-lived child process, in the order closed.

    A child process, not a thread: a thread would share the writer's GIL (the fake ESP's event loop)
    and, in a Locust process, would be a greenlet once gevent has patched ``threading``, blocking the
    load's hub while it compresses. The child (``python -m mailstorm.ledger.compress``, at a lower
    priority) is started at the first segment closed and kept: each ``submit`` writes the segment's path
    on its stdin, one line, so that a rotation costs the writer one small pipe write, not a process
    start (~100 ms of CPU for Python and its imports, measured: at 1 MB segments that was most of what
    rotation cost the fake ESP). ``wait`` tells it to finish and waits for it; a later ``submit`` starts
    another. A writer killed outright closes the pipe with its death: the child compresses what it was
    given and exits.
    """

    def __init__(self, *, fsync: bool = False, fast: bool = False) -> None:
        self._flags = [*(["--fsync"] if fsync else []), *(["--fast"] if fast else [])]
        self._child: subprocess.Popen[bytes] | None = None
        self.children = 0  # started so far

    def submit(self, path: Path) -> None:
        line = os.fsencode(path) + b"\n"
        if self._child is not None:
            try:
                os.write(self._child.stdin.fileno(), line)  # type: ignore[union-attr]
                return
            except OSError:  # the child is gone (killed): a new one takes this segment
                self._child = None
        argv = [sys.executable, "-m", "mailstorm.ledger.compress", *self._flags]
        self._child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        self.children += 1
        os.write(self._child.stdin.fileno(), line)  # type: ignore[union-attr]

    def wait(self, timeout: float | None = None) -> bool:
        """Tell the child to finish; True once every segment submitted is compressed (or was tried),
        False: ``timeout`` passed first (the child goes on alone)."""
        child, self._child = self._child, None
        if child is None:
            return True
        with contextlib.suppress(OSError):
            # An empty line ends the child as its end of input would, even if a process forked from the
            # writer holds the pipe open too.
            os.write(child.stdin.fileno(), b"\n")  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            child.stdin.close()  # type: ignore[union-attr]
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True
