"""The ledger's own cost per record: writing one line and reading one back, per way of declaring records.

    python bench/bench_ledger.py            # 200,000 records per way, best of 7
    python bench/bench_ledger.py --smoke    # a few thousand, for CI: checks it all runs

Writing is what the fake ESP pays on its per-message hot path (one ``esp.accepted`` line per message);
reading is what the reports' ingest pays per line. Compared, for the same ``esp.accepted`` record:

- ``dict + orjson``: the ledger before it had record classes (``write(kind, **fields)``);
- ``msgspec.Struct``: the record classes as declared in ``mailstorm.ledger.records`` (what runs);
- ``dataclass + orjson``: the same declaration as a frozen, slotted dataclass, serialised by orjson.

The record classes were chosen on these figures: they must cost no more than the dict they replaced.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstorm.ledger import EspAccepted, decode, encode_line  # noqa: E402

SRC = "esp-smtp-0"


@dataclass(frozen=True, slots=True, kw_only=True)
class _AcceptedDataclass:
    id: str | None
    mid: str | None
    size: int
    rcpts: int
    sha: str
    proto: str
    api: str | None
    peer: str
    session: str
    key: str | None
    acked: bool
    esp_id: str | None = None


_NAMES = tuple(f.name for f in fields(_AcceptedDataclass))


def _values(i: int) -> dict:
    return {
        "id": f"run-0-{i}", "mid": f"run-0-{i}@x.test", "size": 2048, "rcpts": 1, "sha": "a" * 64,
        "proto": "smtp", "api": None, "peer": "127.0.0.1", "session": "0-123-45", "key": None, "acked": True,
    }  # fmt: skip


def write_dict(v: dict) -> bytes:
    return orjson.dumps({"t": time.time_ns(), "k": "esp.accepted", "src": SRC, **v}) + b"\n"


def write_msgspec(v: dict) -> bytes:
    return encode_line(EspAccepted(**v), t=time.time_ns(), src=SRC)


def write_dataclass(v: dict) -> bytes:
    rec = _AcceptedDataclass(**v)
    line = {"t": time.time_ns(), "k": "esp.accepted", "src": SRC}
    for name in _NAMES:  # optional fields at their default are left out, as the ledger does
        value = getattr(rec, name)
        if value is not None or name != "esp_id":
            line[name] = value
    return orjson.dumps(line) + b"\n"


def read_dict(line: bytes) -> object:
    return orjson.loads(line)


def read_msgspec(line: bytes) -> object:
    return decode(line)


def read_dataclass(line: bytes) -> object:
    d = orjson.loads(line)
    return _AcceptedDataclass(**{n: d[n] for n in _NAMES if n in d})


def per_record_ns(fn, args: list) -> float:
    start = time.perf_counter_ns()
    for a in args:
        fn(a)
    return (time.perf_counter_ns() - start) / len(args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    n, repeat = (2_000, 2) if args.smoke else (200_000, 7)
    values = [_values(i) for i in range(n)]
    lines = [write_msgspec(v) for v in values]
    same = [
        {k: v for k, v in orjson.loads(w(values[0])).items() if k != "t"}
        for w in (write_dict, write_msgspec, write_dataclass)
    ]
    assert same[0] == same[1] == same[2], "the three ways must write the same line"
    ways = [
        ("dict + orjson (before)", write_dict, read_dict),
        ("msgspec.Struct (the record classes)", write_msgspec, read_msgspec),
        ("dataclass + orjson", write_dataclass, read_dataclass),
    ]
    # The ways take turns, best of ``repeat`` each: on a shared machine the best run is the least disturbed.
    best = {name: [float("inf"), float("inf")] for name, _, _ in ways}
    for _ in range(repeat):
        for name, write, read in ways:
            best[name][0] = min(best[name][0], per_record_ns(write, values))
            best[name][1] = min(best[name][1], per_record_ns(read, lines))
    print(f"{n:,} esp.accepted records, ns per record (best of {repeat}, the ways taking turns)")
    print("| way | write (construct + encode) | read (decode) |")
    print("|---|---:|---:|")
    for name, (w, r) in best.items():
        print(f"| {name} | {w:,.0f} | {r:,.0f} |")


if __name__ == "__main__":
    main()
