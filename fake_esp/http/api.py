"""What an ESP HTTP API is to the fake ESP: parse a send request, answer success or that ESP's errors.

Each ESP's API is the ``api.py`` of its home (``mailstorm.fake_esp.esps.<name>.api``): an ``EspApi``
subclass whose ``name`` is the home's name, with ``@register`` on the class; ``ESP_APIS`` imports every
home's ``api`` module the first time it is read, and the HTTP server serves them all on one port.

An API module turns one HTTP request into a ``Submission`` (API key + the messages it asks to send, each
with its correlation id, sender, recipients, size and sha256) or raises ``BadRequest`` carrying the ESP's
own 4xx answer naming what is wrong. It also shapes the answers: success (``accepted``) and errors
(``error``: any status, with that ESP's body and, for 429, its rate-limit headers and Retry-After). The
HTTP server (mailstorm.fake_esp.http) owns everything else: faults, throttling, the ledger, webhooks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import Any, ClassVar

import orjson
from aiohttp import web

from mailstorm.errors import BadRequest as BadRequest  # each API raises it from here; it lives in the tree
from mailstorm.ledger import CAMPAIGN_HEADER, CORRELATION_HEADER
from mailstorm.registry import Registry, homes

_CAMPAIGN_LOWER = CAMPAIGN_HEADER.lower()
# The header fields a message carried in its request, as (name, value) pairs in the request's order.
Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class ApiMessage:
    """One message an API request asks the ESP to send."""

    sender: str
    rcpts: tuple[str, ...]
    id: str | None  # correlation id (X-Mailstorm-Id, or what the API lets a sender attach)
    mid: str | None  # the Message-ID header, when the request carries one
    size: int
    sha: str
    # What the ESP echoes in this message's webhook events, in its own field names (metadata, custom
    # args, user variables, tags, categories, a custom header, the domain): the API module that parsed
    # the request fills it, the ESP's webhook format reads it.
    echo: dict[str, Any] = field(default_factory=dict)
    campaign: str | None = None  # the X-Mailstorm-Campaign header, where the API carries headers and reads it
    # The header fields the request carried for this message, in the API's own field (SendGrid
    # ``headers``, Mailgun ``h:`` fields, Postmark ``Headers``...) or a raw MIME message's header block:
    # what an aimed fault's ``match.header`` reads over HTTP (mailstorm.fake_esp.faults.aim).
    headers: Headers = ()


# Submission.extra key set by the server when the ESP accepts the request into its backlog (a queue
# action): the type of the fault that held it ("quota", "backlog"). An API whose answer says "queued"
# (Mandrill) reads it in ``accepted``; the others answer their normal success.
QUEUED = "mailstorm.queued"
# Submission.extra key set by the server for an API that ``refuses_suppressed`` or ``answers_suppressed``:
# per message, the recipients on the ESP's suppression list ({recipient: the event that suppressed it}),
# which (refuses_suppressed) the server has taken out of the message (a message left with none is not
# sent). The API's success answer names them (Postmark's inactive addresses, MailerSend's
# SOME_SUPPRESSED warning, Mandrill's "rejected" recipients).
SUPPRESSED = "mailstorm.suppressed"


@dataclass(frozen=True, slots=True)
class Submission:
    key: str | None  # the API key (or AWS access key id) the request was made with
    messages: tuple[ApiMessage, ...]
    extra: dict[str, Any] = field(default_factory=dict)  # per-API data the success answer needs
    # The secret that goes with ``key`` when the API sends an id and a secret (Mailjet's Basic
    # public:private, SendPulse's client_id/client_secret): checked against --auth, never recorded.
    secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class RateInfo:
    """What a throttling 429 tells the client: limit per period, remaining, reset (epoch s), retry after."""

    limit: int
    remaining: int
    reset: int
    retry_after_s: int
    # The throttle's window: the seconds an empty bucket takes to refill (burst / rate). An API whose
    # 429 names the limit it hit (HubSpot's ten-secondly or daily policy) tells them apart by it.
    window_s: float | None = None

    def retry_after(self) -> dict[str, str]:
        """Retry-After alone: what an ESP that publishes no rate-limit headers gets from the fake."""
        return {"Retry-After": str(self.retry_after_s)}

    def x_ratelimit(self) -> dict[str, str]:
        """The ``X-RateLimit-*`` trio (SendGrid, Mailgun) plus Retry-After."""
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
            **self.retry_after(),
        }


class EspApi(ABC):
    """One ESP's HTTP API. Subclasses set ``name`` and ``routes`` and implement the three methods."""

    name: ClassVar[str]
    routes: ClassVar[tuple[tuple[str, str], ...]]  # (method, aiohttp path) pairs this API serves
    # Whether ``Submission.key`` is itself the secret (a token: SendGrid, Mailgun, Postmark...) or an
    # id the secret goes with (SES access key id, Mailjet public key): mailstorm.fake_esp.auth.
    key_is_secret: ClassVar[bool] = True
    # Whether the ESP refuses suppressed recipients at send (Postmark, MailerSend: ``suppressed`` and
    # SUPPRESSED), rather than accepting the send and posting its dropped events.
    refuses_suppressed: ClassVar[bool] = False
    # Whether the ESP's success answer names the suppressed recipients of a send it still accepts (and
    # posts their dropped events): Mandrill's "rejected" status. The server sets SUPPRESSED, taking
    # no one out.
    answers_suppressed: ClassVar[bool] = False

    def __init__(self, correlation_header: str = CORRELATION_HEADER) -> None:
        self.correlation_header = correlation_header
        self._corr_lower = correlation_header.lower()

    @abstractmethod
    async def parse(self, request: web.Request) -> Submission:
        """The request's API key and messages; ``BadRequest`` (the ESP's 4xx) when it is not valid."""

    @abstractmethod
    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        """The ESP's success answer for ``sub``, whose messages got the ESP message ids ``esp_ids``."""

    @abstractmethod
    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        """The ESP's answer for an error ``status`` (with its body, and rate headers when ``rate``)."""

    def new_message_id(self) -> str:
        return secrets.token_urlsafe(16)

    def message_ids(self, sub: Submission) -> list[str]:
        """The ESP message id of each message of ``sub`` (one ``new_message_id`` each, unless the ESP
        derives them from one id per request)."""
        return [self.new_message_id() for _ in sub.messages]

    def suppressed(self, sub: Submission, why: dict[str, str]) -> web.Response:
        """The answer to a one-message send whose every recipient is on the ESP's suppression list
        (``why``: recipient -> the event that suppressed it), for an ESP that ``refuses_suppressed``."""
        raise NotImplementedError(f"{self.name} does not refuse suppressed recipients at send")

    def unauthorized(
        self, sub: Submission, status: int, message: str, code: str | int | None
    ) -> web.Response:
        """The answer to a request whose key is not one of the ESP's credentials (the profile's
        auth_failure, in this API's error shape)."""
        return self.error(status, message, code=code)

    # -- helpers shared by the API modules ---------------------------------------------------------

    def correlation_from_headers(self, pairs: Any) -> tuple[str | None, str | None]:
        """(correlation id, Message-ID) from name/value pairs: a dict, or a list of {Name, Value}."""
        corr = mid = None
        items = pairs.items() if isinstance(pairs, dict) else _name_value_pairs(pairs)
        for name, value in items:
            if not isinstance(name, str) or not isinstance(value, str):
                continue
            low = name.lower()
            if low == self._corr_lower:
                corr = value
            elif low == "message-id":
                mid = value
        return corr, mid

    def campaign_from_headers(self, pairs: Any) -> str | None:
        """The ``X-Mailstorm-Campaign`` header's value from name/value pairs, as ``correlation_from_headers``
        reads them (docs/campaigns.md)."""
        items = pairs.items() if isinstance(pairs, dict) else _name_value_pairs(pairs)
        for name, value in items:
            if isinstance(name, str) and isinstance(value, str) and name.lower() == _CAMPAIGN_LOWER:
                return value.strip() or None
        return None

    def parse_mime(self, raw: bytes) -> tuple[str | None, str | None, str | None, list[str], Headers]:
        """(correlation id, Message-ID, From address, To/Cc addresses, every header field) from a raw
        MIME message's headers."""
        msg = BytesHeaderParser().parsebytes(raw)
        sender = getaddresses(msg.get_all("From", []))
        rcpts = [a for _, a in getaddresses(msg.get_all("To", []) + msg.get_all("Cc", [])) if a]
        return (
            _clean(msg.get(self.correlation_header)),
            _clean(msg.get("Message-ID")),
            sender[0][1] if sender and sender[0][1] else None,
            rcpts,
            tuple((name, str(value)) for name, value in msg.items()),
        )


def header_pairs(*sources: Any) -> Headers:
    """The header fields of each source in turn, as (name, value) pairs: a source is a dict {name: value}
    or a list of {Name, Value} (or MailerSend's {name, value}); a name or value that is not a string is
    left out, as ``correlation_from_headers`` leaves it."""
    pairs: list[tuple[str, str]] = []
    for source in sources:
        if isinstance(source, dict):
            items = source.items()
        elif isinstance(source, list):
            items = [
                (p.get("Name", p.get("name")), p.get("Value", p.get("value")))
                for p in source
                if isinstance(p, dict)
            ]
        else:
            continue
        pairs += [(n, v) for n, v in items if isinstance(n, str) and isinstance(v, str)]
    return tuple(pairs)


def _clean(value: Any) -> str | None:
    return str(value).strip() if value is not None else None


def _name_value_pairs(pairs: Any) -> list[tuple[Any, Any]]:
    if not isinstance(pairs, list):
        return []
    return [(p.get("Name"), p.get("Value")) for p in pairs if isinstance(p, dict)]


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic`` header, or None when it is absent or malformed."""
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return user, password


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def load_json(raw: bytes) -> tuple[Any, str | None]:
    """(value, None) or (None, a one-line reason) — JSON errors are the client's, never a 500."""
    if not raw.strip():
        return None, "the request body is empty"
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, f"the request body is not valid JSON ({exc})"


ESP_APIS: Registry[type[EspApi]] = Registry(
    "ESP API", name_of=lambda cls: cls.name, discover=homes("mailstorm.fake_esp.esps", "api")
)
register = ESP_APIS.register  # class decorator: the class serves the API of ESP ``cls.name``
