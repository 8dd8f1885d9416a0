"""The target extension point: one required pair of methods, optional abilities, and the ``TARGETS``
registry.

A target kind is one module of this package: its spec model (a frozen pydantic model whose ``kind``
literal is the kind's name), its class (``spec_model`` set, ``start``/``stop``, optional abilities) and
``@register`` on the class. ``TARGETS`` imports every module of the package the first time it is read;
the scenario's ``target:`` union and its JSON Schema are built from it (mailstorm.harness.scenario).

The runner gives every target a ``TargetContext`` (where the fake ESP listens, the run directory, the
seed) and gets back the endpoints the load should hit. Targets run the SUT in processes of their own
(never inside the runner), so a SIGKILL of the SUT is a real crash.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mailstorm.endpoint import Endpoint
from mailstorm.registry import Registry, literal_of, modules

__all__ = [
    "TARGETS",
    "Actionable",
    "Alive",
    "Endpoint",
    "QueueSampler",
    "Target",
    "TargetContext",
    "register",
]


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


TARGETS: Registry[Any] = Registry(
    "target kind",
    name_of=lambda cls: literal_of(cls.spec_model, "kind"),
    discover=modules("mailstorm.harness.targets"),
)


def register(cls: type) -> type:
    """Class decorator: make a target available in scenario files under its spec model's ``kind``."""
    cls.kind = TARGETS.name_of(cls)  # type: ignore[attr-defined]
    return TARGETS.register(cls)
