"""The fake ESP's typed configuration: fault specs and the ESP spec, parsed once at the edge.

A fault spec is flat (as Toxiproxy toxics are): common fields plus the fields of its ``type``.

    common   name (optional unique id), type, phase (one or a list of connect | ehlo | mail | rcpt |
             data | eod | http; eod = after the final "."), probability (0..1, default 1, drawn by the
             engine from a seeded RNG), ttl (s: the fault removes itself this long after it became
             active), after (s: active only this long after it was added)
    latency      dist fixed{ms} | uniform{min_ms,max_ms} | normal{mean_ms,sd_ms} |
                 lognormal{median_ms,sigma} | empirical{values_ms}
    reply        reply "451 4.3.0 text" (a 4yz/5yz; 421 also closes the connection)
    disconnect   (nothing: close without a reply; at eod the message is kept first, acked=false)
    tarpit       byte_delay_ms, reply (optional: the normal reply when absent)
    throttle     rate (per s), burst, key ip | sender_domain | auth_user | api_key, reply
    concurrency  max_sessions, reply (421 at the banner past max_sessions open sessions)
    message_cap  max_messages, reply (421 at MAIL once a connection has sent max_messages)
    greylist     retry_after_s, reply (451 for an unseen client/sender/recipient triplet)
    outage       duration_s, mode refuse (listener closed, in-flight sessions cut) | hang (accepted,
                 never answered)
    tls          mode no_starttls (EHLO without STARTTLS, STARTTLS answered 454; on an implicit-TLS port
                 the session stays plain text) | handshake_failure (a TLS handshake_failure alert) |
                 expired_cert | wrong_host (the handshake offers that certificate, signed by the CA) |
                 cut_mid_data (the connection cut after the first data line, no close_notify); the
                 default phase follows the mode: ehlo+tls, tls, tls, tls, data

Phases ``auth`` (the AUTH command, before the credentials are checked) and ``tls`` (the STARTTLS
command, or the handshake of an implicit-TLS connection; both listeners' TLS handshakes over https)
take any fault that answers or cuts: a reply fault on ``auth`` gives 535 or 454 at AUTH.

Use ``parse_fault(dict)`` / ``parse_esp_spec(dict)``: they raise ``ConfigError`` whose one-line message
names the field (``faults[0].probability: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.auth import Credential
from mailstorm.fake_esp.webhooks.spec import WebhookSpec
from mailstorm.ledger import CORRELATION_HEADER
from mailstorm.replies import (
    GREYLISTED,
    SES_THROTTLED,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_MESSAGES,
    Reply,
    parse_reply,
)

Phase = Literal["connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "eod", "http"]
SMTP_PHASES: tuple[str, ...] = ("connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "eod")

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024


def _check_reply(value: str) -> str:
    """A fault's reply must parse and be a refusal (4yz/5yz): a fault never fakes success."""
    reply = parse_reply(value)
    if reply.code < 400:
        raise ValueError(f"a fault reply must be 4yz or 5yz, got {reply.code}")
    return str(reply)


class _Fault(BaseModel):
    # No NaN or infinity: a ttl of 1e400 never expires and would be answered as non-standard JSON.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    phase: Phase | tuple[Phase, ...]
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    ttl: float | None = Field(default=None, gt=0)
    after: float | None = Field(default=None, ge=0)

    @field_validator("phase", mode="after")
    @classmethod
    def _phases_not_empty(cls, v: Any) -> Any:
        if isinstance(v, tuple) and not v:
            raise ValueError("give at least one phase")
        return v

    @property
    def phases(self) -> frozenset[str]:
        return frozenset((self.phase,) if isinstance(self.phase, str) else self.phase)


class _WithReply(_Fault):
    reply: str

    @field_validator("reply")
    @classmethod
    def _reply_ok(cls, v: str) -> str:
        return _check_reply(v)

    @property
    def parsed_reply(self) -> Reply:
        return parse_reply(self.reply)


class LatencyFault(_Fault):
    type: Literal["latency"]
    dist: Literal["fixed", "uniform", "normal", "lognormal", "empirical"] = "fixed"
    ms: float | None = Field(default=None, ge=0)
    min_ms: float | None = Field(default=None, ge=0)
    max_ms: float | None = Field(default=None, ge=0)
    mean_ms: float | None = Field(default=None, ge=0)
    sd_ms: float | None = Field(default=None, ge=0)
    median_ms: float | None = Field(default=None, gt=0)
    sigma: float | None = Field(default=None, ge=0)
    values_ms: tuple[Annotated[float, Field(ge=0)], ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _dist_fields(self) -> LatencyFault:
        needed = {
            "fixed": ("ms",),
            "uniform": ("min_ms", "max_ms"),
            "normal": ("mean_ms", "sd_ms"),
            "lognormal": ("median_ms", "sigma"),
            "empirical": ("values_ms",),
        }[self.dist]
        for field in needed:
            if getattr(self, field) is None:
                raise ValueError(f"{field}: required for dist {self.dist}")
        if self.dist == "uniform" and self.min_ms > self.max_ms:  # type: ignore[operator]
            raise ValueError("min_ms: must not exceed max_ms")
        return self


class ReplyFault(_WithReply):
    type: Literal["reply"]


class DisconnectFault(_Fault):
    type: Literal["disconnect"]


class TarpitFault(_Fault):
    type: Literal["tarpit"]
    byte_delay_ms: float = Field(gt=0, le=10_000)
    reply: str | None = None

    @field_validator("reply")
    @classmethod
    def _reply_ok(cls, v: str | None) -> str | None:
        return None if v is None else _check_reply(v)

    @property
    def parsed_reply(self) -> Reply | None:
        return parse_reply(self.reply) if self.reply is not None else None


class ThrottleFault(_WithReply):
    type: Literal["throttle"]
    phase: Phase | tuple[Phase, ...] = "eod"
    rate: float = Field(gt=0)
    burst: int = Field(default=1, ge=1)
    key: Literal["ip", "sender_domain", "auth_user", "api_key"] = "ip"
    reply: str = str(SES_THROTTLED)


class ConcurrencyFault(_WithReply):
    type: Literal["concurrency"]
    phase: Phase | tuple[Phase, ...] = "connect"
    max_sessions: int = Field(ge=0)
    reply: str = str(TOO_MANY_CONNECTIONS)


class MessageCapFault(_WithReply):
    type: Literal["message_cap"]
    phase: Phase | tuple[Phase, ...] = "mail"
    max_messages: int = Field(ge=0)
    reply: str = str(TOO_MANY_MESSAGES)


class GreylistFault(_WithReply):
    type: Literal["greylist"]
    phase: Phase | tuple[Phase, ...] = "rcpt"
    retry_after_s: float = Field(ge=0)
    reply: str = str(GREYLISTED)


class OutageFault(_Fault):
    type: Literal["outage"]
    # An outage is a state of the whole listener, not of one step; the phase only says where in-flight
    # sessions are caught in hang mode, so every SMTP phase by default.
    phase: Phase | tuple[Phase, ...] = SMTP_PHASES  # type: ignore[assignment]
    duration_s: float = Field(gt=0)
    mode: Literal["refuse", "hang"] = "refuse"


TLS_MODES = ("no_starttls", "handshake_failure", "expired_cert", "wrong_host", "cut_mid_data")
# Where each TLS fault can act (its default phase is all of them).
TLS_FAULT_PHASES: dict[str, tuple[str, ...]] = {
    "no_starttls": ("ehlo", "tls"),
    "handshake_failure": ("tls",),
    "expired_cert": ("tls",),
    "wrong_host": ("tls",),
    "cut_mid_data": ("data",),
}


class TlsFault(_Fault):
    type: Literal["tls"]
    mode: Literal["no_starttls", "handshake_failure", "expired_cert", "wrong_host", "cut_mid_data"]
    phase: Phase | tuple[Phase, ...] = "tls"

    @model_validator(mode="before")
    @classmethod
    def _default_phase(cls, data: Any) -> Any:
        if isinstance(data, dict) and "phase" not in data and data.get("mode") in TLS_FAULT_PHASES:
            return {**data, "phase": TLS_FAULT_PHASES[data["mode"]]}
        return data

    @model_validator(mode="after")
    def _phase_fits_mode(self) -> TlsFault:
        allowed = TLS_FAULT_PHASES[self.mode]
        if not self.phases <= set(allowed):
            raise ValueError(f"phase: a tls fault of mode {self.mode} acts at {' or '.join(allowed)}")
        return self


FaultSpec = Annotated[
    LatencyFault
    | ReplyFault
    | DisconnectFault
    | TarpitFault
    | ThrottleFault
    | ConcurrencyFault
    | MessageCapFault
    | GreylistFault
    | OutageFault
    | TlsFault,
    Field(discriminator="type"),
]

FAULT_TYPES: tuple[str, ...] = (
    "latency",
    "reply",
    "disconnect",
    "tarpit",
    "throttle",
    "concurrency",
    "message_cap",
    "greylist",
    "outage",
    "tls",
)


# In a file: "USER:PASSWORD", or the full mapping.
CredentialField = Annotated[
    Credential,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[^:\x00-\x1f\x7f]+:[^\x00-\x1f\x7f]+$"},
                Credential.model_json_schema(),
            ],
            "description": "USER:PASSWORD",
        }
    ),
]


class EspSpec(BaseModel):
    """Everything one fake ESP (all its worker processes) is started with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bind: str = "127.0.0.1"
    # No port 0: N workers must agree on the port, and the caller must know it (EspProcess picks free ones).
    smtp_port: int = Field(default=2525, ge=1, le=65535)
    http_port: int | None = Field(default=None, ge=0, le=65535)
    control_port: int = Field(default=8025, ge=1, le=65535)
    token: str | None = Field(default=None, min_length=8)
    profile: str | None = None
    ledger: Path | None = None
    seed: int = 0
    faults: tuple[FaultSpec, ...] = ()
    processes: int = Field(default=1, ge=1, le=64)
    correlation_header: str = Field(default=CORRELATION_HEADER, pattern=r"^[!-9;-~]+$")
    max_message_size: int = Field(default=DEFAULT_MAX_MESSAGE_SIZE, ge=1024)
    # Past the limit, 452 (RFC 5321 4.5.3.1.10); without one, 10,000 RCPT grow one envelope without
    # bound. RFC 5321 4.5.3.1.8 asks a server for at least 100, but ESPs allow fewer (SES: 50): any >= 1.
    max_recipients: int = Field(default=1000, ge=1)
    # Seconds a session may go without a complete valid command before it is closed (RFC 5321
    # 4.5.3.2.7 asks for 5 minutes): what stops a slowloris client holding a session forever.
    idle_timeout: float = Field(default=300.0, gt=0)
    store_bodies: Path | None = None
    hostname: str = Field(default="fake-esp.mailstorm.test", min_length=1, pattern=r"^[!-~]+$")  # one word
    # Event webhooks posted for accepted messages (issue 3: mailstorm.fake_esp.webhooks); None = none.
    webhooks: WebhookSpec | None = None
    # TLS (mailstorm.fake_esp.tls): off, STARTTLS on the SMTP port, or TLS from the first byte (the
    # "TLS wrapper" of port 465); the HTTP APIs are https when it is not off. require_tls refuses MAIL
    # and AUTH before STARTTLS (530). tls_ca: where the CA is written (default <ledger>/ca.pem);
    # tls_cert/tls_key: a certificate of the user's own to serve instead of the one made at start.
    tls: Literal["off", "starttls", "implicit"] = "off"
    require_tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Credentials (mailstorm.fake_esp.auth): when given, AUTH is required and API keys are checked.
    auth: tuple[CredentialField, ...] = ()

    @field_validator("require_tls", "tls_cert")
    @classmethod
    def _needs_tls(cls, v: Any, info: ValidationInfo) -> Any:
        if v and info.data.get("tls", "off") == "off":
            raise ValueError("needs tls starttls or implicit")
        return v

    @field_validator("tls_key")
    @classmethod
    def _key_needs_cert(cls, v: Any, info: ValidationInfo) -> Any:
        if v is not None and info.data.get("tls_cert") is None:
            raise ValueError("needs tls_cert (the certificate this key belongs to)")
        return v

    @property
    def tls_on(self) -> bool:
        return self.tls != "off"

    def ca_path(self, default_ledger: Path) -> Path:
        """Where the CA certificate is written: ``tls_ca``, else ``<ledger dir>/ca.pem``."""
        return self.tls_ca if self.tls_ca is not None else (self.ledger or default_ledger) / "ca.pem"


_FAULT_ADAPTER: TypeAdapter[Any] = TypeAdapter(FaultSpec)


def _loc(loc: tuple[Any, ...]) -> str:
    """pydantic's location minus the union tag it inserts ('reply' in ('reply', 'probability'))."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in FAULT_TYPES and (i == 0 or out.endswith("]")):
            continue  # faults[0].reply.probability -> faults[0].probability
        elif part.startswith(("literal[", "tuple[")):
            continue  # which arm of `Phase | tuple[Phase, ...]` failed is noise to a user
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(exc: ValidationError, prefix: str = "") -> str:
    """One line naming the first bad field: 'faults[0].probability: Input should be ...'."""
    err = exc.errors()[0]
    where = _loc(tuple(err["loc"]))
    if prefix:
        where = f"{prefix}.{where}" if where else prefix
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "union_tag_invalid":
        msg = f"unknown fault type {err['input'].get('type')!r}; known: {', '.join(FAULT_TYPES)}"
        where = f"{prefix}.type" if prefix else "type"
    elif err["type"] == "union_tag_not_found":
        where = f"{prefix}.type" if prefix else "type"
        msg = f"missing; one of {', '.join(FAULT_TYPES)}"
    return f"{where}: {msg}" if where else msg


def parse_fault(data: Any, *, where: str = "") -> FaultSpec:
    """Validate one fault (a dict from JSON or YAML); ``ConfigError`` naming the field otherwise."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'fault'}: a fault is a mapping, got {type(data).__name__}")
    try:
        return _FAULT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc, where)) from None


def parse_esp_spec(data: Any) -> EspSpec:
    try:
        return EspSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def fault_to_dict(spec: Any) -> dict[str, Any]:
    """The JSON form of a fault spec (no unset defaults), as the control API lists it."""
    return spec.model_dump(mode="json", exclude_none=True)
