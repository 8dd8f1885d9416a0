"""bench/peak.py: a benchmark child's peak RSS is its own, not its parent's (the trap ``ru_maxrss`` falls
into after a vfork + exec, which made bench_reports' engine at 10 M messages read 2,121 MB)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"

# A parent that peaks at 400 MB, frees it, then starts a child that peaks at 100 MB.
PARENT = """
import json, subprocess, sys
big = b"x" * (400 << 20)
del big
print(subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout)
"""
CHILD = f"""
import json, resource, sys
sys.path.insert(0, {str(BENCH)!r})
from peak import peak_rss_mb
mid = b"x" * (100 << 20)
del mid
ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"peak": peak_rss_mb(), "ru_maxrss": ru}}))
"""


def test_a_child_peak_is_its_own_not_its_parents():
    out = subprocess.run(
        [sys.executable, "-c", f"CHILD = {CHILD!r}\n{PARENT}"], capture_output=True, text=True, check=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert 100 <= got["peak"] < 250, got  # the child's 100 MB, plus the interpreter
    # The trap it avoids: ru_maxrss carried the parent's 400 MB into the child.
    assert got["ru_maxrss"] >= 400, got
