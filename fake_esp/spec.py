"""The fake ESP's typed configuration: the fault spec union and the ESP spec, parsed once at the edge.

A fault spec is flat (as Toxiproxy toxics are): the common fields (mailstorm.fake_esp.faults.base:
name, type, phase, probability, ttl, after) plus the fields of its ``type``, declared by the fault's own
module in mailstorm.fake_esp.faults (docs/faults.md lists them). ``FaultSpec`` (the discriminated union
on ``type``) and ``FAULT_TYPES`` are built here from the fault registry, so a new fault module is in the
scenario parser, the error messages, ``--help`` and the JSON Schema with no edit here.
The outage fault's ``on`` names the parts of the ESP it takes down (``Surface``).
The ESP's TLS (``tls``, ``require_tls``, ``tls_ca``/``tls_cert``/``tls_key``) and AUTH (``auth``:
credentials, mailstorm.fake_esp.auth) are EspSpec fields.

Use ``parse_fault(dict)`` / ``parse_esp_spec(dict)``: they raise ``ConfigError`` whose one-line message
names the field (``faults[0].probability: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from mailstorm.correlation import Correlation
from mailstorm.errors import ConfigError
from mailstorm.fake_esp.auth import Credential
from mailstorm.fake_esp.faults import outage as _outage
from mailstorm.fake_esp.faults.aim import AIM_ERROR, Match
from mailstorm.fake_esp.faults.base import FAULTS
from mailstorm.fake_esp.messages import KEEP_DEFAULT
from mailstorm.fake_esp.webhooks.spec import WebhookSpec
from mailstorm.ledger import CORRELATION_HEADER

DEFAULT_MAX_MESSAGE_SIZE = 10 * 1024 * 1024

FAULT_TYPES: tuple[str, ...] = FAULTS.names()
# The parts of the ESP an outage takes down, as the scenario's esp_outage step names them.
Surface = _outage.Surface
OUTAGE_SURFACES = _outage.OUTAGE_SURFACES
FaultSpec = Annotated[
    Union[tuple(FAULTS[t].spec_model for t in FAULT_TYPES)],  # noqa: UP007  (a runtime-built union)
    Field(discriminator="type"),
]

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


ESP_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"  # no hyphen: the ledger file name splits on them


def ledger_source(name: str | None, worker: int) -> str:
    """The ledger source (file name) of one worker of the ESP named ``name`` (None: the only ESP)."""
    return f"esp-{name}-smtp-{worker}" if name else f"esp-smtp-{worker}"


class EspSpec(BaseModel):
    """Everything one fake ESP (all its worker processes) is started with."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Its name among several ESPs of one run (a scenario's ``esps:``): its ledger files are then
    # ``esp-<name>-smtp-<worker>.jsonl``, so the reports tell which ESP took a message. Unset: ``esp-smtp-N``.
    name: str | None = Field(default=None, pattern=ESP_NAME_PATTERN, max_length=32)
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
    # Which carrier of the id is read first (mailstorm.correlation): the header, the plus-addressed
    # envelope recipient, or a body token; then the header, then Message-ID.
    correlation: Correlation = "header"
    max_message_size: int = Field(default=DEFAULT_MAX_MESSAGE_SIZE, ge=1024)
    # Past the limit, 452 (RFC 5321 4.5.3.1.10); without one, 10,000 RCPT grow one envelope without
    # bound. RFC 5321 4.5.3.1.8 asks a server for at least 100, but ESPs allow fewer (SES: 50): any >= 1.
    max_recipients: int = Field(default=1000, ge=1)
    # Seconds a session may go without a complete valid command before it is closed (RFC 5321
    # 4.5.3.2.7 asks for 5 minutes): what stops a slowloris client holding a session forever.
    idle_timeout: float = Field(default=300.0, gt=0)
    store_bodies: Path | None = None
    # The latest accepted messages each worker keeps in memory for GET /messages (0: none).
    keep_messages: int = Field(default=KEEP_DEFAULT, ge=0, le=1_000_000)
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

    def webhook_keys_path(self, default_ledger: Path) -> Path:
        """Where the webhook keys are kept: ``webhooks.keys_file``, else ``<ledger>/webhook-keys.json``."""
        if self.webhooks is not None and self.webhooks.keys_file is not None:
            return self.webhooks.keys_file
        return (self.ledger or default_ledger) / "webhook-keys.json"

    @property
    def control_url(self) -> str:
        """The control API's base URL as a local client reaches it (a wildcard bind: over loopback)."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "", "::") else self.bind
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.control_port}"

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
    aim = AIM_ERROR.match(msg) if err["type"] == "value_error" else None
    if aim is not None:  # a check across fields (the aim against the phases) names its own field
        where = f"{where}.{aim.group(1)}" if where else aim.group(1)
        msg = msg[aim.end() :]
    if err["type"] == "extra_forbidden" and len(err["loc"]) >= 2 and err["loc"][-2] == "match":
        msg = f"unknown match key; known: {', '.join(Match.model_fields)}"
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
