"""The target extension point: one required pair of methods, optional abilities, and a name registry.

The runner gives every target a ``TargetContext`` (where the fake ESP listens, the run directory, the
seed) and gets back the endpoints the load should hit. Targets run the SUT in processes of their own
(never inside the runner), so a SIGKILL of the SUT is a real crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mailstorm.endpoint import Endpoint

__all__ = [
    "REGISTRY",
    "Actionable",
    "Alive",
    "Endpoint",
    "EspSecurity",
    "QueueSampler",
    "Target",
    "TargetContext",
    "register",
]


@dataclass(frozen=True)
class EspSecurity:
    """What the fake ESP requires of a SUT relaying to it, as a production ESP does: TLS (``tls``: off,
    starttls or implicit; ``ca`` the CA file to trust) and AUTH (``credentials``: (user, password) pairs,
    the first one for a SUT to log in with). A target configures its SUT with these (Postfix:
    ``relay_tls``/``relay_auth``; the reference pipeline: automatically)."""

    tls: str = "off"
    ca: Path | None = None
    require_tls: bool = False
    hostname: str = "fake-esp.mailstorm.test"  # the name the ESP's certificate is for (and 127.0.0.1)
    credentials: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def login(self) -> tuple[str, str] | None:
        return self.credentials[0] if self.credentials else None


@dataclass(frozen=True)
class TargetContext:
    """What a target needs from the run to start its SUT."""

    run_dir: Path
    ledger_dir: Path
    seed: int
    esp_smtp: tuple[str, int]  # where the fake ESP's SMTP listener is (the SUT relays there)
    esp_http: str | None = None  # base URL of the fake ESP's HTTP APIs, when served
    allow_remote: bool = False
    env: dict[str, str] = field(default_factory=dict)
    esp_security: EspSecurity = field(default_factory=EspSecurity)


class Target(Protocol):
    """A system under test. ``start`` blocks until the SUT is ready; ``stop`` leaves nothing behind."""

    kind: str

    def start(self, ctx: TargetContext) -> list[Endpoint]: ...

    def stop(self) -> None: ...


@runtime_checkable
class Actionable(Protocol):
    """A target the chaos timeline can act on (kill, pause, resume, restart, ...)."""

    def actions(self) -> frozenset[str]: ...

    def act(self, action: str, **params: Any) -> str:
        """Carry out ``action``; return a one-line description for the timeline. Raise UserError for an
        action this target does not know."""
        ...


@runtime_checkable
class QueueSampler(Protocol):
    """A target that can report its queue depth (messages accepted, not yet relayed)."""

    def queue_depth(self) -> int | None: ...


@runtime_checkable
class Alive(Protocol):
    """A target that can say whether its SUT process is still running (to notice a SUT that died)."""

    def alive(self) -> bool: ...


REGISTRY: dict[str, type] = {}


def register(kind: str):
    """Class decorator: make a target available under ``kind`` in scenario files."""

    def deco(cls: type) -> type:
        if kind in REGISTRY:
            raise ValueError(f"target kind {kind!r} registered twice")
        cls.kind = kind
        REGISTRY[kind] = cls
        return cls

    return deco
