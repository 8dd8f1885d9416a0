"""Event webhook formats: the canonical event, what a format is, and the ``WEBHOOK_FORMATS`` registry.

Canonical events (``EVENTS``; ``Event``: one event about one recipient of one accepted message):
delivered, deferred (a temporary failure before the outcome), bounce (hard), soft_bounce (a temporary
failure the ESP gave up on: mailbox full...), dropped (not sent: the recipient is on the ESP's
suppression list), open, click, complaint (a spam report), unsubscribe. Each ESP's format is the
``webhook.py`` of its home (``mailstorm.fake_esp.esps.<name>.webhook``): a ``WebhookFormat`` subclass
whose ``name`` is the home's name, with ``@register`` on the class. ``render`` builds the POST body and
headers carrying events in that format; ``read`` inverts it into canonical dicts {event, id, esp_id,
rcpt, event_id} (for receivers, tests and reports: what did the pipeline see?). ``kinds`` names the
canonical events the ESP has an event for (an ESP without one, e.g. Postal's complaints, posts nothing:
the poster records the event as not posted); ``suppresses`` the events after which the ESP puts the
recipient on its suppression list (mailstorm.fake_esp.webhooks.suppression). ``WEBHOOK_FORMATS`` imports
every home's ``webhook`` module the first time it is read.

Signing: a format that signs with a shared secret does it in ``render`` (``signing_key``); one that
signs what ``render`` cannot see (Mandrill: the URL; SendGrid: a timestamp of the sending; SNS: with the
run's keys, naming the control API's URLs) overrides ``sign``, which gets the rendered POST and a
``Signer`` (mailstorm.fake_esp.webhooks.signing). ``handshake`` is a POST an ESP makes once to a new
endpoint before any event (SNS's SubscriptionConfirmation).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs

import orjson

from mailstorm.registry import Registry, homes

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailstorm.fake_esp.webhooks.signing import Signer, WebhookKeys
    from mailstorm.ledger import Record

EVENTS: tuple[str, ...] = (
    "delivered", "deferred", "bounce", "soft_bounce", "dropped", "open", "click", "complaint", "unsubscribe",
)  # fmt: skip
# Why a recipient was dropped (Event.detail of a dropped event): the event that suppressed it.
SUPPRESSED_FOR: tuple[str, ...] = ("bounce", "complaint", "unsubscribe")
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True, slots=True)
class Event:
    """One canonical event about one recipient of one accepted message."""

    event: str
    event_id: str
    id: str | None  # correlation id
    esp_id: str
    rcpt: str
    sender: str
    ts: float
    header: str  # the correlation header name (custom args / metadata key)
    # What the sender set for the ESP to echo (mailstorm.fake_esp.http.api.ApiMessage.echo; empty for
    # SMTP acceptances), in the ESP's own field names.
    echo: dict[str, Any] = field(default_factory=dict)
    # A detail of the event: for ``dropped``, what suppressed the recipient (SUPPRESSED_FOR), or
    # "global" (a global suppression list: SES's simulator suppressionlist@).
    detail: str = ""


class WebhookFormat(ABC):
    """One ESP's event webhook body. Subclasses set ``name`` and implement ``render`` and ``read``;
    a format whose POST carries several events (a JSON array, Mandrill's ``mandrill_events``) raises
    ``per_post``."""

    name: ClassVar[str]
    per_post: ClassVar[int] = 1  # the most events one POST of this format can carry
    kinds: ClassVar[frozenset[str]] = frozenset(EVENTS)  # the canonical events the ESP posts
    # After which events the ESP suppresses the recipient (a later send gets its dropped answer).
    suppresses: ClassVar[frozenset[str]] = frozenset({"bounce", "complaint"})

    @abstractmethod
    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        """The POST body and headers carrying ``events``: 1 to ``per_post`` of them (``split`` cuts a
        longer list into posts)."""

    @abstractmethod
    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        """Canonical {event, id, esp_id, rcpt, event_id} dicts from a body this format rendered."""

    def sign(self, body: bytes, headers: dict[str, str], signer: Signer) -> tuple[bytes, dict[str, str]]:
        """The rendered POST as sent, signed where the ESP signs with more than ``render`` sees (the URL,
        the time of sending, the run's keys); unchanged by default."""
        return body, headers

    def handshake(self, signer: Signer) -> tuple[bytes, dict[str, str]] | None:
        """The POST this ESP makes to a new endpoint before any event (None: none)."""
        return None

    def routes(self, keys: WebhookKeys, endpoint: str, write: Callable[[Record], object]) -> list[Any]:
        """aiohttp routes the ESP serves (on the control API, without its token) for the endpoint's
        handshake and verification (SNS: the signing certificate, ConfirmSubscription); ``write``
        records in the ledger. None by default."""
        return []


class JsonFormat(WebhookFormat):
    """A format whose POST is JSON: one event as an object, or (``array``) the events as a JSON array.
    Subclasses implement ``event`` (one event's object) and ``read``."""

    array: ClassVar[bool] = False

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        if self.array:
            return orjson.dumps([self.event(e, signing_key) for e in events]), dict(JSON)
        return orjson.dumps(self.event(one(self.name, events), signing_key)), dict(JSON)

    @abstractmethod
    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        """The JSON object of one event in this format."""


WEBHOOK_FORMATS: Registry[type[WebhookFormat]] = Registry(
    "webhook format", name_of=lambda cls: cls.name, discover=homes("mailstorm.fake_esp.esps", "webhook")
)
register = WEBHOOK_FORMATS.register  # class decorator: the class is the webhook format ``cls.name``


def _format(fmt: str) -> WebhookFormat:
    cls = WEBHOOK_FORMATS.get(fmt)
    if cls is None:
        raise ValueError(WEBHOOK_FORMATS.unknown(fmt))
    return cls()


def per_post(fmt: str, batch_max: int) -> int:
    """How many events one POST of format ``fmt`` carries at most: the profile's ``batch_max``, bounded
    by what the format can carry (1 for the formats whose POST is one event)."""
    return max(1, min(batch_max, _format(fmt).per_post))


@functools.cache
def _kinds(fmt: str) -> tuple[frozenset[str], frozenset[str]]:
    """(kinds, suppresses) of format ``fmt``, looked up once: the poster asks per event."""
    f = _format(fmt)
    return f.kinds, f.suppresses


def posts(fmt: str, kind: str) -> bool:
    """Whether format ``fmt``'s ESP has an event for canonical event ``kind``."""
    return kind in _kinds(fmt)[0]


def suppresses(fmt: str, kind: str) -> bool:
    """Whether format ``fmt``'s ESP suppresses a recipient after event ``kind``."""
    return kind in _kinds(fmt)[1]


def split(fmt: str, events: list[Event], batch_max: int) -> list[list[Event]]:
    """``events`` cut into the POSTs format ``fmt`` sends them in (each 1 to ``per_post`` events)."""
    n = per_post(fmt, batch_max)
    return [events[i : i + n] for i in range(0, len(events), n)]


def render(fmt: str, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
    """The POST body and headers carrying ``events`` (1 to the format's ``per_post``) in format ``fmt``."""
    return _format(fmt).render(events, signing_key=signing_key)


def sign(fmt: str, body: bytes, headers: dict[str, str], signer: Signer) -> tuple[bytes, dict[str, str]]:
    """A rendered POST of format ``fmt`` signed as the ESP sends it (``WebhookFormat.sign``)."""
    return _format(fmt).sign(body, headers, signer)


def handshake(fmt: str, signer: Signer) -> tuple[bytes, dict[str, str]] | None:
    """The POST format ``fmt``'s ESP makes to a new endpoint first, if any (``WebhookFormat.handshake``)."""
    return _format(fmt).handshake(signer)


def routes(keys: WebhookKeys, endpoint: str, write: Callable[[Record], object]) -> list[Any]:
    """Every format's ``routes`` for ``endpoint``: what the control API serves for the webhooks."""
    return [r for name in WEBHOOK_FORMATS.names() for r in _format(name).routes(keys, endpoint, write)]


def read_events(fmt: str, body: bytes, header: str) -> list[dict[str, Any]]:
    """Canonical {event, id, esp_id, rcpt, event_id} dicts from a webhook body of format ``fmt``."""
    return _format(fmt).read(body, header)


# -- helpers the formats share ----------------------------------------------------------------------


def one(fmt: str, events: list[Event]) -> Event:
    """The one event of a POST in a one-event-per-POST format; ValueError naming the count otherwise."""
    if len(events) != 1:
        raise ValueError(f"webhook format {fmt} carries one event per POST, not {len(events)} (use split)")
    return events[0]


def iso_time(ts: float) -> str:
    """``2026-01-01T00:00:00.000Z``: the timestamp form most ESPs use."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded body as a dict of its first values (blank values kept)."""
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
