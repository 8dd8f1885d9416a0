"""What every fault is built from: the common spec fields, ``Context``, ``Action``, ``FaultBase`` and the
``FAULTS`` registry.

A fault is one module of this package (a Toxiproxy toxic for SMTP): its spec model (a ``FaultSpecBase``
whose ``type`` literal is the fault's name), its class (one ``apply`` method) and ``@register`` on the
class. Given the context of one step (an SMTP phase or an HTTP request) and its own per-key state,
``apply`` returns an ``Action`` or None (no change). A fault never draws its own probability (the engine
does) and never raises into the server. Nothing else lists the faults: ``FAULTS`` imports every module
of the package the first time it is read, and the spec union, ``FAULT_TYPES``, the error messages, the
``--help`` text and the JSON Schema are built from it (``mailstorm.fake_esp.spec``).

Common spec fields (flat, as Toxiproxy toxics are):

    name         optional unique id (the engine makes ``<type>-<n>`` otherwise)
    phase        one or a list of connect | ehlo | tls | auth | mail | rcpt | data | eod | http (eod =
                 after the final "."; tls = the STARTTLS command, or the handshake of an implicit-TLS
                 connection, and the https handshakes; auth = the AUTH command, before the
                 credentials are checked); a fault may give a default
    probability  0..1, default 1, drawn by the engine from a seeded RNG
    ttl          s: the fault removes itself this long after it became active
    after        s: active only this long after it was added
    match        what a step must show for the fault to see it (rcpt, rcpt_domain, mail_from, header,
                 api_key, auth_user, client_ip: mailstorm.fake_esp.faults.aim)
    count        the fault acts on the next N matching steps, then ends itself
    attempts     the fault acts only on these attempts of a message (by correlation id: [1] = first try)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from mailstorm.fake_esp.faults.aim import Match, check_aim
from mailstorm.ledger import EspFaultEnded
from mailstorm.registry import Registry, literal_of, modules
from mailstorm.replies import Reply, parse_reply

# tls: the STARTTLS command, or the handshake of an implicit-TLS connection (and the https handshakes);
# auth: the AUTH command, before the credentials are checked (a reply fault there gives 535 or 454).
Phase = Literal["connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "eod", "http"]
SMTP_PHASES: tuple[str, ...] = ("connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "eod")


def check_holds(spec: FaultSpecBase) -> None:
    """A fault that queues holds a message the ESP accepted: only after the data (eod) or an API call."""
    if not spec.phases <= {"eod", "http"}:
        raise ValueError("phase: a message is accepted into the backlog at phase eod or http only")


def check_reply(value: str) -> str:
    """A fault's reply must parse and be a refusal (4yz/5yz): a fault never fakes success."""
    reply = parse_reply(value)
    if reply.code < 400:
        raise ValueError(f"a fault reply must be 4yz or 5yz, got {reply.code}")
    return str(reply)


class FaultSpecBase(BaseModel):
    """The fields every fault spec has; a fault's own model adds ``type: Literal["<name>"]`` and its own."""

    # No NaN or infinity: a ttl of 1e400 never expires and would be answered as non-standard JSON.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    phase: Phase | tuple[Phase, ...]
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    ttl: float | None = Field(default=None, gt=0)
    after: float | None = Field(default=None, ge=0)
    match: Match | None = None
    count: int | None = Field(default=None, ge=1)
    attempts: tuple[PositiveInt, ...] | None = Field(default=None, min_length=1)

    @field_validator("phase", mode="after")
    @classmethod
    def _phases_not_empty(cls, v: Any) -> Any:
        if isinstance(v, tuple) and not v:
            raise ValueError("give at least one phase")
        return v

    @model_validator(mode="after")
    def _aim_visible(self) -> FaultSpecBase:
        check_aim(self)
        return self

    @property
    def phases(self) -> frozenset[str]:
        return frozenset((self.phase,) if isinstance(self.phase, str) else self.phase)


class WithReply(FaultSpecBase):
    """A fault spec that answers with a configured refusal (``reply``, checked once here)."""

    reply: str

    @field_validator("reply")
    @classmethod
    def _reply_ok(cls, v: str) -> str:
        return check_reply(v)

    @property
    def parsed_reply(self) -> Reply:
        return parse_reply(self.reply)


# Action kinds, as the ledger's esp.fault records name them.
PASS = "pass"
DELAY = "delay"
REPLY = "reply"
DISCONNECT = "disconnect"
TARPIT = "tarpit"
HANG = "hang"
QUEUE = "queue"


@dataclass(slots=True)
class Context:
    """One step of one session (SMTP) or one request (HTTP), filled by the server before it asks.

    ``messages`` counts messages already finished on this connection; ``open_sessions`` the sessions
    (or in-flight requests) open on the ESP including this one (with ``--processes N``: on all workers).
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
    # What aimed faults (mailstorm.fake_esp.faults.aim) look at: every recipient of the message so far,
    # the message as received (SMTP eod) and its correlation id (eod, http).
    recipients: list[str] = field(default_factory=list)
    message: bytes | None = None
    msg_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # HTTP: the header fields the request carried (every message's, in the API's own field), as pairs.
    headers: tuple[tuple[str, str], ...] = ()
    _head: bytes | None = None  # the header block of ``message`` (or ``headers``), cut once per step
    _low_head: bytes | None = None  # the same, lower-cased once per step (header names are looked for in it)

    @property
    def head(self) -> bytes | None:
        """The header block of ``message`` (None before eod), or over HTTP the ``headers`` the request
        carried, written as one (None when it carried none)."""
        if self._head is None:
            if self.message is not None:
                end = self.message.find(b"\r\n\r\n")
                self._head = self.message if end < 0 else self.message[: end + 2]
            elif self.headers:
                self._head = header_block(self.headers)
        return self._head

    @property
    def low_head(self) -> bytes | None:
        """``head`` lower-cased (cut and lowered once per message: the ids and the header aims share it)."""
        if self._low_head is None and (head := self.head) is not None:
            self._low_head = head.lower()
        return self._low_head

    def new_message(self, message: bytes | None, msg_id: str | None) -> None:
        self.message, self.msg_id, self._head, self._low_head = message, msg_id, None, None


_HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 2.2: printable ASCII but the colon
_LINE_BREAK = re.compile(r"[\r\n]+")


def header_block(pairs: tuple[tuple[str, str], ...]) -> bytes:
    """Header fields an HTTP request carried, written as a message's header block (``Name: value`` CRLF
    each) so that ``match.header`` reads them as it reads SMTP's. A line break in a value is unfolded (it
    could not forge a field of its own); a name that is not a header name is left out."""
    lines = [
        f"{name}: {_LINE_BREAK.sub(' ', value)}\r\n" for name, value in pairs if _HEADER_NAME.fullmatch(name)
    ]
    return "".join(lines).encode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Fired:
    """One fault that changed something at one step (an esp.fault ledger record)."""

    fault: str
    ftype: str
    action: str
    delay_s: float = 0.0
    # This action used up the fault's ``count`` (its value; 0: not): it ended itself (esp.fault.ended).
    ended: int = 0


@dataclass(frozen=True, slots=True)
class Action:
    """What the server does at this step.

    ``delay_s`` is waited first in every case (the sum of the latency faults that fired). Then ``kind``:
    pass (carry on as normal), delay (same as pass, after the wait), reply (answer ``reply`` instead of
    the normal answer; a 421 also closes the connection), disconnect (close without a word), tarpit
    (write the answer, ``reply`` or the normal one, one byte every ``byte_delay_s``), hang (never
    answer), queue (accept as normal, and deliver ``hold_s`` later: an esp.delivered record then; the
    HTTP APIs that say so answer "queued"). ``fault`` names the fault that chose ``kind``; ``fired``
    lists every fault that acted.
    """

    kind: str = PASS
    delay_s: float = 0.0
    reply: Reply | None = None
    byte_delay_s: float = 0.0
    fault: str | None = None
    fired: tuple[Fired, ...] = ()
    hold_s: float = 0.0

    @property
    def closes(self) -> bool:
        """A 421 closes the transmission channel after it is sent (RFC 5321 3.8)."""
        return self.reply is not None and self.reply.code == 421


PASS_ACTION = Action()


def ended_record(fired: Fired, phase: str, session: str | None) -> EspFaultEnded:
    """The ledger record of a fault whose action ``fired`` used up its ``count``."""
    return EspFaultEnded(
        fault=fired.fault, ftype=fired.ftype, reason="count", acted=fired.ended, phase=phase, session=session
    )


class Fault(Protocol):
    """The one required method. ``state`` is this fault's own dict, kept by the engine (per key inside
    it as the fault likes), wiped by reset; ``rng`` is the engine's seeded RNG (for sampling, e.g. a
    latency); ``now`` the engine clock in seconds."""

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action | None: ...


class FaultBase:
    """What a fault class starts from: its ``spec_model`` (the spec it is built from) and its defaults.

    ``limits_rate``: the fault is a sending limit, so over HTTP its reply becomes a 429 with the ESP's
    rate-limit headers and Retry-After (mailstorm.fake_esp.http.server), whatever its SMTP code.
    """

    spec_model: ClassVar[type[FaultSpecBase]]
    limits_rate: ClassVar[bool] = False
    # ``shared_state``: the fault's state is a limit of the ESP, so with N worker processes it is held in
    # shared memory by all of them together (mailstorm.fake_esp.shared), each step under its lock. The
    # state then holds numbers or pairs of numbers under hashable keys (``get``, ``[key] = value``).
    shared_state: ClassVar[bool] = False

    def __init__(self, spec: Any) -> None:
        self.spec = spec


FAULTS: Registry[type[FaultBase]] = Registry(
    "fault type",
    name_of=lambda cls: literal_of(cls.spec_model, "type"),
    discover=modules("mailstorm.fake_esp.faults"),
)
register = FAULTS.register  # class decorator: the class becomes the fault for specs of its model's type
