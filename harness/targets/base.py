"""The target extension point: the ``Target`` protocol the runner holds, optional abilities, and the
``TARGETS`` registry.

A target kind is one module of this package: its spec model (a frozen pydantic model whose ``kind``
literal is the kind's name), its class (``spec_model`` set, ``addresses``/``start``/``stop``, optional
abilities) and ``@register`` on the class. ``TARGETS`` imports every module of the package the first time
it is read; the scenario's ``target:`` union and its JSON Schema are built from it.

A target says which addresses its spec sends traffic to (``addresses``: the runner passes every one
through the loopback guard before anything starts, in ``mailstorm validate`` too, whatever the spec's
fields are called), starts its SUT given a ``TargetContext`` (where the fake ESP listens, the run
directory, the seed) and returns the endpoints the load should hit (checked again by the runner), and
stops it. Targets run the SUT in processes of their own (never inside the runner), so a SIGKILL of the
SUT is a real crash. Abilities beyond that are Protocols of their own, checked by type.
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
    "Address",
    "Alive",
    "Endpoint",
    "EspSecurity",
    "HeldQueue",
    "Monitored",
    "ParamChecked",
    "QueueLister",
    "QueueSampler",
    "Target",
    "TargetContext",
    "WebhookReceiving",
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
    # Every ESP's SMTP listener in failover order (esps:), the first being esp_smtp; () with one ESP.
    esp_relays: tuple[tuple[str, int], ...] = ()
    # The relays are hosts of one ESP (esp.hosts), not fallbacks: spread the load over them (the
    # reference pipeline's instance N starts at relay N).
    esp_spread: bool = False
    esp_http: str | None = None  # base URL of the fake ESP's HTTP APIs, when served
    allow_remote: bool = False
    env: dict[str, str] = field(default_factory=dict)
    esp_security: EspSecurity = field(default_factory=EspSecurity)
    # The ledger source (file name) the SUT writes under; None: the kind's own ("sut", "postfix"). A pool
    # gives each member its own, so the records say which member took a message.
    ledger_source: str | None = None


@dataclass(frozen=True)
class Address:
    """A host that traffic of the run goes to because of a target's spec, and the spec field naming it
    (its path under ``target``; empty for a host the target fixes itself), so a refusal names the field
    and its line."""

    host: str
    field: tuple[str | int, ...] = ()


@runtime_checkable
class Target(Protocol):
    """A system under test. ``start`` blocks until the SUT is ready; ``stop`` leaves nothing behind."""

    kind: str

    def addresses(self) -> list[Address]:
        """Every host the load, a readiness check or the SUT itself will send traffic to because of this
        target's spec (endpoints, listen host, ready URLs...), known before ``start``."""
        ...

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
class ParamChecked(Protocol):
    """An ``Actionable`` target that can judge an action's params before the run starts (the runner asks
    for every target step of the timeline, in ``mailstorm validate`` too)."""

    def check_params(self, action: str, params: dict[str, Any]) -> None:
        """Raise UserError naming what is wrong (a pool member it does not have...)."""
        ...


@runtime_checkable
class QueueSampler(Protocol):
    """A target that can report its queue depth (messages accepted, not yet relayed)."""

    def queue_depth(self) -> int | None: ...


@runtime_checkable
class Monitored(Protocol):
    """A target whose SUT serves health and metrics pages (what probes with ``target: health|metrics``
    poll; the runner checks each URL's host like any other address)."""

    @property
    def health_urls(self) -> list[str]: ...

    @property
    def metrics_urls(self) -> list[str]: ...


@runtime_checkable
class WebhookReceiving(Protocol):
    """A target whose SUT receives the ESP's event webhooks and counts them (a scenario's
    ``analytics.receiver: target``). The ESP starts first, so ``webhook_url`` is known before ``start``;
    ``analytics_urls`` answer the counts per event kind as one JSON object (``analytics.probe.url:
    target``)."""

    def webhook_url(self, fmt: str) -> str:
        """Where the ESP posts webhooks of format ``fmt`` (a free port is taken for it now)."""
        ...

    @property
    def analytics_urls(self) -> list[str]: ...


@runtime_checkable
class QueueLister(Protocol):
    """A target that can list the messages it still holds (accepted, not yet relayed or bounced). The
    runner asks at the end of the drain: those messages are pending, not lost; and, the listing being
    complete, a deferred message it does not hold (wiped, or forgotten by a restore) is lost."""

    def held_ids(self) -> HeldQueue | None:
        """Every message still queued; None when the queue cannot be read now."""
        ...


@dataclass(frozen=True)
class HeldQueue:
    """What a target's queue held when listed."""

    ids: dict[str, str | None]
    """Correlation id -> the SUT's own name for the message (a queue id; None when it has none)."""
    complete: bool = True
    """False when some queued message could not be named (so a message missing from ``ids`` may
    still be queued)."""


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
