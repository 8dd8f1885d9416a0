"""The run's watchdog: a process of its own that ends whatever the run left when the runner dies.

The runner starts it before any part, in a session of its own (a signal to the runner's process group
does not reach it), handing it the read end of a pipe whose only write end the runner keeps. However the
runner ends (SIGKILL and the OOM killer included), the kernel closes that end: the watchdog reads
end-of-file and ends everything of the run (``mailstorm.harness.leftovers``: processes marked with the run
directory, the Postfix instance by its ``MAIL_CONFIG``, containers by their label, the Postfix spool),
one line each in ``logs/watchdog.log``. A runner that finishes writes ``done`` first: the watchdog exits
without looking. Children of the runner also get SIGTERM from the kernel at once
(``mailstorm.deathsig``); the watchdog covers the rest: detached daemons, containers, children started
from another thread.

    python -m mailstorm.harness.watchdog --run-dir DIR --fd N
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mailstorm import PYTHON_M
from mailstorm.errors import EXIT_OK
from mailstorm.harness.leftovers import RUN_DIR_ENV, RunnerLock, end, find

DONE = b"done"
DISARM_TIMEOUT_S = 5.0


@contextlib.contextmanager
def lifeline(run_dir: Path, log_path: Path) -> Iterator[Watchdog]:
    """What a runner keeps while its run goes: the run directory's lock (how ``mailstorm cleanup`` tells
    a live run), the watchdog, and the run directory in the environment every child inherits (how the
    watchdog and ``mailstorm cleanup`` find them). The watchdog is disarmed at the end of the block (or
    earlier, by the runner, once every part is stopped)."""
    lock = RunnerLock(run_dir).acquire()
    watchdog = Watchdog(run_dir, log_path).start()
    before = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = os.path.abspath(run_dir)
    try:
        yield watchdog
    finally:
        if before is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = before
        watchdog.disarm()
        lock.release()


class Watchdog:
    """The runner's side: ``start()`` it first, ``disarm()`` it last."""

    def __init__(self, run_dir: Path, log_path: Path) -> None:
        self.run_dir = Path(os.path.abspath(run_dir))
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Watchdog:
        read, write = os.pipe()  # neither end is inherited by any other child (O_CLOEXEC)
        env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}  # it is no part of the run
        argv = [sys.executable, *PYTHON_M, "mailstorm.harness.watchdog", "--run-dir", str(self.run_dir)]
        try:
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    [*argv, "--fd", str(read)],
                    pass_fds=(read,),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C to the runner's group must not reach it
                )
        finally:
            os.close(read)
        self._fd = write
        return self

    def disarm(self) -> None:
        """The run ended by itself and stopped its parts: tell the watchdog, and wait for it to go."""
        if self._fd is None:
            return
        try:
            os.write(self._fd, DONE)
        except OSError:
            pass  # it is gone already (killed by someone): nothing to tell
        finally:
            os.close(self._fd)
            self._fd = None
        if self._proc is not None:
            try:
                self._proc.wait(DISARM_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def runner_died(fd: int) -> bool:
    """Block until the runner's end of the pipe closes; True unless it said ``done`` first."""
    said = b""
    while chunk := os.read(fd, 64):
        said += chunk
    return said != DONE


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailstorm.harness.watchdog")
    parser.add_argument("--run-dir", required=True, type=Path)
    parser.add_argument("--fd", required=True, type=int, help="read end of the runner's pipe")
    args = parser.parse_args(argv)
    if not runner_died(args.fd):
        return EXIT_OK
    died = time.monotonic()
    run_dir = Path(os.path.abspath(args.run_dir))
    # The runner is dead (its end of the pipe closed), even if the kernel has not dropped its lock yet.
    lines = end(find(run_dir.parent, only=run_dir, check_live=False))
    for line in lines:
        print(f"watchdog: {line}", flush=True)
    print(
        f"watchdog: the runner died; {len(lines)} thing(s) ended in {time.monotonic() - died:.1f} s",
        flush=True,
    )
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
