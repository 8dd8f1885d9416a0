"""Event webhook formats: the canonical event, what a format is, and the ``WEBHOOK_FORMATS`` registry.

Canonical events: delivered, deferred, bounce, open, click (``Event``: one event about one recipient of
one accepted message). Each ESP's format is the ``webhook.py`` of its home
(``mailstorm.fake_esp.esps.<name>.webhook``): a ``WebhookFormat`` subclass whose ``name`` is the home's
name, with ``@register`` on the class. ``render`` builds the POST body and headers carrying events in
that format; ``read`` inverts it into canonical dicts {event, id, esp_id, rcpt, event_id} (for
receivers, tests and reports: what did the pipeline see?). ``WEBHOOK_FORMATS`` imports every home's
``webhook`` module the first time it is read.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs

import orjson

from mailstorm.registry import Registry, homes

EVENTS: tuple[str, ...] = ("delivered", "deferred", "bounce", "open", "click")
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


class WebhookFormat(ABC):
    """One ESP's event webhook body. Subclasses set ``name`` and implement ``render`` and ``read``."""

    name: ClassVar[str]

    @abstractmethod
    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        """The POST body and headers carrying ``events``: one, or up to the profile's ``webhook.batch_max``
        for an ESP that batches (the poster decides)."""

    @abstractmethod
    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        """Canonical {event, id, esp_id, rcpt, event_id} dicts from a body this format rendered."""


class JsonFormat(WebhookFormat):
    """A format whose POST is JSON: one event as an object, or (``array``) the events as a JSON array.
    Subclasses implement ``event`` (one event's object) and ``read``."""

    array: ClassVar[bool] = False

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        if self.array:
            return orjson.dumps([self.event(e, signing_key) for e in events]), dict(JSON)
        (e,) = events
        return orjson.dumps(self.event(e, signing_key)), dict(JSON)

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


def render(fmt: str, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
    """The POST body and headers carrying ``events`` in format ``fmt``."""
    return _format(fmt).render(events, signing_key=signing_key)


def read_events(fmt: str, body: bytes, header: str) -> list[dict[str, Any]]:
    """Canonical {event, id, esp_id, rcpt, event_id} dicts from a webhook body of format ``fmt``."""
    return _format(fmt).read(body, header)


# -- helpers the formats share ----------------------------------------------------------------------


def iso_time(ts: float) -> str:
    """``2026-01-01T00:00:00.000Z``: the timestamp form most ESPs use."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_form(body: bytes) -> dict[str, str]:
    """A form-encoded body as a dict of its first values (blank values kept)."""
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
