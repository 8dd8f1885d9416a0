"""What a toxic is: one spec model, one required coroutine, and the ``TOXICS`` registry.

A toxic is one module of ``mailstorm.harness.chaosproxy.toxics``: its spec model (a ``ToxicSpecBase``
whose ``type`` literal is its name), its class (``spec_model``, ``pipe``) and ``@register`` on the class.
``TOXICS`` imports every module of that package the first time it is read; the toxic spec union (scenario
``network:`` steps, the control API) is built from it (``spec``).

Like Toxiproxy: a toxic sees the bytes flowing one way through one proxied connection (``upstream`` is
client -> server, i.e. the SUT talking to the ESP; ``downstream`` is server -> client) and may delay them,
cut them into pieces, drop them or reset the connection. Toxics are chained in the order they were added;
each calls ``send`` to pass (possibly changed) bytes on to the next one. ``toxicity`` is drawn by the
proxy, not the toxic: once per connection and toxic, from the proxy's seeded RNG.

A proxy fronts one or more paths (``smtp``: the SUT to the ESP's SMTP listener, ``http``: to its HTTP
APIs, ``webhooks``: the ESP's event posts back to the SUT); a toxic acts on every path unless its ``on``
narrows it. In a run with several ESPs each ESP has its own three, named ``<path>@<esp>`` (``path_key``):
``on`` still names the kind (``smtp``), and a toxic added for one ESP (``add_toxic(spec, esp=...)``) acts
on that ESP's paths alone. A toxic that holds bytes back, cuts or swallows them calls ``link.acted`` (the
proxy records it in the ledger once per connection and toxic), so a run can tell a toxic that touched
nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from mailstorm.registry import Registry, literal_of, modules

Stream = Literal["upstream", "downstream", "both"]
Path = Literal["smtp", "http", "webhooks"]
PATHS: tuple[str, ...] = ("smtp", "http", "webhooks")
Send = Callable[[bytes], Awaitable[None]]
ESP_SEPARATOR = "@"


def path_key(kind: str, esp: str | None = None) -> str:
    """The name of the path ``kind`` of ESP ``esp`` (None: a proxy that fronts one ESP: the kind alone)."""
    return kind if esp is None else f"{kind}{ESP_SEPARATOR}{esp}"


def split_path(path: str) -> tuple[str, str | None]:
    """(kind, ESP name or None) of a path name made by ``path_key``."""
    kind, sep, esp = path.partition(ESP_SEPARATOR)
    return kind, (esp if sep else None)


class ToxicSpecBase(BaseModel):
    """Fields every toxic has. ``name`` defaults to the type (unique per proxy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    name: str | None = None
    stream: Stream = "downstream"
    toxicity: float = Field(1.0, ge=0.0, le=1.0)
    on: tuple[Path, ...] | None = Field(None, min_length=1, description="the paths it acts on; None: all")


class Link(Protocol):
    """One direction of one proxied connection, as a toxic sees it."""

    direction: str  # "upstream" | "downstream"
    path: str  # the route the connection took: "smtp" | "http" | "webhooks"
    rng: random.Random  # this connection's own RNG (seeded from the proxy's)
    opened: float  # loop time the client connected
    state: dict[str, Any]  # per-link scratch space for stateful toxics (keyed by toxic name)

    def reset(self) -> None:
        """Abort both sides of the connection with a TCP RST."""
        ...

    def close(self) -> None:
        """Close both sides quietly (FIN)."""
        ...

    def acted(self, toxic: Any, action: str) -> None:
        """``toxic`` changed this connection's bytes (delay, throttle, reset, blackhole, slice): recorded
        in the ledger the first time per connection and toxic."""
        ...


class Toxic(Protocol):
    """A toxic: built from its spec; ``pipe`` handles one chunk that arrived at ``arrived`` (loop time)."""

    spec: ToxicSpecBase

    async def pipe(self, data: bytes, arrived: float, link: Link, send: Send) -> None: ...


TOXICS: Registry[Any] = Registry(
    "toxic",
    name_of=lambda cls: literal_of(cls.spec_model, "type"),
    discover=modules("mailstorm.harness.chaosproxy.toxics"),
)
register = TOXICS.register  # class decorator: the class is the toxic for specs of its model's type


class ToxicBase:
    """Shared constructor; subclasses set ``spec_model`` and implement ``pipe``."""

    spec_model: ClassVar[type[ToxicSpecBase]]

    def __init__(self, spec: ToxicSpecBase) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.type


async def sleep_until(deadline: float) -> None:
    """Sleep until loop time ``deadline`` (no-op when it has passed)."""
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)
