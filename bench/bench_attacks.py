"""Resource attacks on the fake ESP and its peak memory in each: a Markdown table.

    python bench/bench_attacks.py                  # the issue's sizes
    python bench/bench_attacks.py --scale 0.1      # smaller, for a quick check

Each attack runs against a fresh fake ESP process (idle timeout 3 s, size limit 10 MiB, recipient limit
1,000; a concurrency fault of 100 sessions for the connection flood); memory is the resident set of the
ESP process sampled every 10 ms (tests.hardening.support.PeakMemory). The attacks themselves are the
hardening tests' (tests/hardening/attacks.py), which assert the replies; this prints what they cost.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailstorm.fake_esp.launch import EspProcess  # noqa: E402
from tests.hardening import attacks  # noqa: E402
from tests.hardening.support import PeakMemory  # noqa: E402

MB = 1024 * 1024
IDLE_S = 3.0


def attacks_at(scale: float) -> list[tuple[str, bool, object]]:
    """(name, needs the concurrency limit, attack(port) -> result text) for each attack."""

    def n(x: int) -> int:
        return max(1, int(x * scale))

    def slow(count: int, in_data: bool):
        return lambda port: f"closed after <= {max(attacks.slowloris(port, count, in_data=in_data)):.1f} s"

    return [
        (f"slowloris: {n(200)} connections, a byte/s into a command", False, slow(n(200), False)),
        (f"slowloris: {n(50)} connections, a byte/s into DATA", False, slow(n(50), True)),
        (
            f"{n(50)} MB message, no SIZE=",
            False,
            lambda port: attacks.big_message(port, n(50) * 1000 * 1000)[:3].decode(),
        ),
        (
            f"{n(10000):,} RCPT in one envelope",
            False,
            lambda port: str(dict(attacks.many_recipients(port, n(10000)))),
        ),
        (
            f"{n(1000):,} connections at once, limit 100",
            True,
            lambda port: str(dict(attacks.many_connections(port, n(1000)))),
        ),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every attack's size (default 1)")
    args = p.parse_args()
    print("| attack | result | ESP RSS before (MB) | peak (MB) | growth (MB) | s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, limited, attack in attacks_at(args.scale):
        with tempfile.TemporaryDirectory() as d:
            extra = ["--idle-timeout", str(IDLE_S)]
            with EspProcess(Path(d) / "ledger", log_path=Path(d) / "esp.log", extra_args=extra) as esp:
                if limited:
                    esp.control.add_fault({"type": "concurrency", "max_sessions": 100, "phase": "connect"})
                t0 = time.monotonic()
                with PeakMemory(esp.pid) as mem:
                    result = attack(esp.smtp_port)
                took = time.monotonic() - t0
        print(
            f"| {name} | {result} | {mem.baseline / MB:.1f} | {mem.peak / MB:.1f} | "
            f"{(mem.peak - mem.baseline) / MB:.1f} | {took:.1f} |"
        )


if __name__ == "__main__":
    main()
