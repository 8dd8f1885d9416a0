"""Reports while a run goes: report.html and report.json rebuilt from the ledgers so far, marked partial.

Every ``reports.every`` (unset: every ``DEFAULT_EVERY_S`` on runs longer than ``LONG_RUN_S``, never on
shorter ones) the runner starts ``python -m mailstorm.harness.partials RUN_DIR --at N --of M``: a child
process of its own, at a lower priority, so the analysis takes neither the runner's GIL nor its time
slices; its output goes to ``logs/partials.log``. One at a time: a rebuild still going when the next is
due is not doubled, the next waits for the following tick. ``stop`` (before the final reports) ends one
still running, so the final report.html/json are the run's, never a late partial one. The reports say
"partial, at N s of M s" (``mailstorm.reports.build(..., partial=...)``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from mailstorm.errors import MailstormError
from mailstorm.reports.spec import ReportSpec

DEFAULT_EVERY_S = 300.0
LONG_RUN_S = 900.0
# Below the runner, the load and the SUT (a partial report may wait, they may not), but not so far below
# that a busy 2-core machine starves it for the whole run (at 10 it got ~10% of a contended core).
_NICE = 5


def every_s(spec: ReportSpec, duration_s: float) -> float | None:
    """How often a run of ``duration_s`` rebuilds its partial reports; None: never."""
    if spec.every is not None:
        return spec.every
    return DEFAULT_EVERY_S if duration_s > LONG_RUN_S else None


class Partials:
    """Starts a partial rebuild of ``run_dir``'s reports each time ``every`` seconds have passed."""

    def __init__(self, run_dir: Path, *, every: float | None, duration_s: float) -> None:
        self.run_dir = Path(run_dir)
        self.every = every
        self.duration_s = duration_s
        self.started = 0  # rebuilds started (for the tests and the log)
        self._next = every
        self._proc: subprocess.Popen[bytes] | None = None

    def tick(self, elapsed_s: float) -> None:
        """Start a rebuild if one is due and none is running."""
        if self._next is None or elapsed_s < self._next or self.running:
            return
        assert self.every is not None
        while self._next <= elapsed_s:  # a tick late (a busy runner) does not start several
            self._next += self.every
        logs = self.run_dir / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / "partials.log").open("ab") as log:
            argv = ["-m", "mailstorm.harness.partials", str(self.run_dir), "--at", f"{elapsed_s:.1f}"]
            self._proc = subprocess.Popen(
                [sys.executable, *argv, "--of", f"{self.duration_s:g}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.started += 1

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """End a rebuild still going (the final reports come next and must not be overwritten)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        for fmt in ("html", "json"):
            (self.run_dir / f"report.{fmt}.tmp").unlink(missing_ok=True)  # a write cut by the terminate


def main(argv: list[str] | None = None) -> int:
    from mailstorm.reports import build

    p = argparse.ArgumentParser(
        prog="python -m mailstorm.harness.partials", description=__doc__.splitlines()[0]
    )
    p.add_argument("run_dir", type=Path)
    p.add_argument("--at", type=float, required=True, help="seconds since the run started")
    p.add_argument("--of", type=float, required=True, help="the scenario's duration in seconds")
    args = p.parse_args(argv)
    os.nice(_NICE)
    try:
        build(args.run_dir, partial=(args.at, args.of))
    except MailstormError as exc:
        print(f"partial report at {args.at:.0f} s: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"partial report at {args.at:.0f} s of {args.of:g} s written", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
