"""Free loopback ports and readiness checks: how every component knows another is up, without sleeps."""

from __future__ import annotations

import socket
import time

from mailstorm.errors import HarnessError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the OS picks it; bind 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float = 15.0, *, what: str = "service", alive=None) -> None:
    """Block until ``host:port`` accepts a TCP connection; raise HarnessError naming ``what`` on timeout.

    ``alive`` (optional callable) is polled too, so a child that died is reported at once instead of
    after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if port_open(host, port):
            return
        if alive is not None and not alive():
            raise HarnessError(f"{what} exited before it opened {host}:{port}")
        if time.monotonic() > deadline:
            raise HarnessError(f"{what} did not open {host}:{port} within {timeout:g} s")
        time.sleep(delay)  # polling interval of a readiness check, not a stand-in for one
        delay = min(delay * 2, 0.2)
