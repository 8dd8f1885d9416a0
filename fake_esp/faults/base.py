"""What a fault sees and what it may answer: ``Context``, ``Action``, the ``Fault`` protocol, the registry.

A fault is one small object with one job (a Toxiproxy toxic for SMTP): given the context of one step
(an SMTP phase or an HTTP request) and its own per-key state, it returns an ``Action`` or None (no
change). It never draws its own probability (the engine does) and never raises into the server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from mailstorm.replies import Reply

# Action kinds, as the ledger's esp.fault records name them.
PASS = "pass"
DELAY = "delay"
REPLY = "reply"
DISCONNECT = "disconnect"
TARPIT = "tarpit"
HANG = "hang"


@dataclass(slots=True)
class Context:
    """One step of one session (SMTP) or one request (HTTP), filled by the server before it asks.

    ``messages`` counts messages already finished on this connection; ``open_sessions`` the sessions
    (or in-flight requests) open on this worker including this one.
    """

    phase: str = "connect"
    session: str = ""
    peer: str = ""
    helo: str | None = None
    mail_from: str | None = None
    rcpt: str | None = None
    rcpts: int = 0
    messages: int = 0
    auth_user: str | None = None
    api_key: str | None = None
    open_sessions: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fired:
    """One fault that changed something at one step (an esp.fault ledger record)."""

    fault: str
    ftype: str
    action: str
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Action:
    """What the server does at this step.

    ``delay_s`` is waited first in every case (the sum of the latency faults that fired). Then ``kind``:
    pass (carry on as normal), delay (same as pass, after the wait), reply (answer ``reply`` instead of
    the normal answer; a 421 also closes the connection), disconnect (close without a word), tarpit
    (write the answer, ``reply`` or the normal one, one byte every ``byte_delay_s``), hang (never
    answer). ``fault`` names the fault that chose ``kind``; ``fired`` lists every fault that acted.
    """

    kind: str = PASS
    delay_s: float = 0.0
    reply: Reply | None = None
    byte_delay_s: float = 0.0
    fault: str | None = None
    fired: tuple[Fired, ...] = ()

    @property
    def closes(self) -> bool:
        """A 421 closes the transmission channel after it is sent (RFC 5321 3.8)."""
        return self.reply is not None and self.reply.code == 421


PASS_ACTION = Action()


class Fault(Protocol):
    """The one required method. ``state`` is this fault's own dict, kept by the engine (per key inside
    it as the fault likes), wiped by reset; ``rng`` is the engine's seeded RNG (for sampling, e.g. a
    latency); ``now`` the engine clock in seconds."""

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None: ...


REGISTRY: dict[str, type] = {}


def register(type_name: str):
    """Class decorator: ``@register("latency")`` makes the class the fault for specs of that type."""

    def deco(cls: type) -> type:
        if type_name in REGISTRY:
            raise ValueError(f"fault type {type_name!r} registered twice")
        REGISTRY[type_name] = cls
        return cls

    return deco
