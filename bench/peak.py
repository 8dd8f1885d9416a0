"""A benchmark child's own peak RSS, which ``getrusage(RUSAGE_SELF).ru_maxrss`` is not.

At exec, Linux folds the outgoing memory map's high-water mark into the process's ``ru_maxrss``, and
Python's subprocess starts children with vfork, whose outgoing map is the parent's: a child's
``ru_maxrss`` is at least its parent's peak. bench_reports' parent had written the 10 M-message ledger
(~2.1 GB peak) before it started the engine's child, whose "peak" then read 2,121 MB, the generator's.
``VmHWM`` is the high-water mark of the process's own memory map, which exec makes new.
"""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident set since it last exec'd, in MiB (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status: peak RSS needs Linux")
