"""Where mailstorm may send traffic: loopback only, unless the user explicitly allows more.

A load or chaos tool pointed at the wrong address is an attack. Every target, ESP bind address and probe
URL passes through ``check_address`` before a socket is opened.
"""

from __future__ import annotations

import ipaddress
import socket

from mailstorm.errors import TargetNotAllowed


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is in 127.0.0.0/8 or ::1 (no DNS for literals)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_address(host: str, *, allow_remote: bool = False, what: str = "target") -> str:
    """Return ``host`` if traffic may go there; raise ``TargetNotAllowed`` naming it otherwise."""
    if allow_remote or is_loopback(host):
        return host
    raise TargetNotAllowed(
        f"{what} {host!r} is not a loopback address; mailstorm only sends traffic off this machine "
        "when both the scenario file (allow_remote: true) and the command line (--allow-remote) allow it"
    )
