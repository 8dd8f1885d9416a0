"""Child processes that end when the process that started them dies, however it dies (SIGKILL included).

Linux's ``PR_SET_PDEATHSIG``, set in the child between fork and exec (it survives the exec): the kernel
sends the child SIGTERM the moment its parent goes. Every launcher of a long-lived child passes
``**die_with_parent()`` to ``subprocess.Popen``.

Two limits, both covered by the run's watchdog (``mailstorm.harness.watchdog``): the "parent" is the
*thread* that forked, so a child started from another thread (a restart by the chaos timeline) would be
signalled when that thread ends, mid-run; there nothing is set. And what is not our child (a daemon that
detached itself, as Postfix's master does; a container) is out of reach. Elsewhere than Linux: nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> dict[str, Any]:
    """``Popen`` keyword arguments that make the child receive ``sig`` when this process dies; empty
    where that cannot hold (not Linux, or not on the main thread, whose end is the process's end)."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return {}
    prctl, parent, signum = _PRCTL, os.getpid(), int(sig)

    def arm() -> None:  # runs in the child after fork: no imports, no locks, nothing but two calls
        prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the call above: no signal would come
            os._exit(128 + signum)

    return {"preexec_fn": arm}
