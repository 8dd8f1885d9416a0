"""Every process a run started, however deep: remembered while they live, ended if a part leaves any
(and ``terminate_child``: how a part ends a child of its own).

Parts start children of their own (Locust workers, Postfix's daemons, the ESP's workers); a part that dies
or is killed can leave them behind. The runner scans its descendants as it goes (pid plus create time, so
a reused pid is never mistaken for ours) and reaps whatever is still alive when the run ends.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

import psutil


def terminate_child(proc: subprocess.Popen | None, *, graceful: bool, timeout: float) -> None:
    """End a child we started and reap it: SIGTERM first when ``graceful`` (SIGKILL after ``timeout``),
    else SIGKILL; nothing when it has already exited."""
    if proc is None or proc.poll() is not None:
        return
    if graceful:
        proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    proc.kill()
    proc.wait()


SCAN_INTERVAL_S = 1.0  # descendants appear at start-up and restarts; a scan a second catches them cheaply


class Descendants:
    def __init__(self) -> None:
        self._seen: dict[int, float] = {}  # pid -> create time
        self._spared: set[int] = set()
        self._last_scan = 0.0

    def spare(self, pid: int | None) -> None:
        """Never reap ``pid`` (the run's watchdog: it must outlive the runner's own end)."""
        if pid is not None:
            self._spared.add(pid)

    def scan(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_scan < SCAN_INTERVAL_S:
            return
        self._last_scan = now
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children(recursive=True):
                if child.pid in self._spared:
                    continue
                with contextlib.suppress(psutil.Error):
                    self._seen.setdefault(child.pid, child.create_time())

    def reap(self, *, grace_s: float) -> list[int]:
        """Terminate, then (after ``grace_s``) kill, every one still alive; return their pids."""
        self.scan(force=True)
        left: list[psutil.Process] = []
        for pid, created in self._seen.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created:  # the same process, not a reused pid
                    left.append(proc)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(left, timeout=grace_s)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=3.0)
        return [p.pid for p in left]
