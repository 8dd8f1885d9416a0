"""Postmark webhooks: {RecordType: Delivery | Bounce (Type HardBounce / Transient) | Open | Click,
MessageID, Recipient, Metadata, Tag, ...}; the Metadata and Tag the send set come back (and the
correlation id, in Metadata).
Reference: https://postmarkapp.com/developer/webhooks/webhooks-overview.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, iso_time, register


@register
class PostmarkWebhook(JsonFormat):
    name = "postmark"

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        when = iso_time(e.ts)
        meta = dict(e.echo.get("Metadata") or {})
        if e.id is not None and e.id not in meta.values():
            meta[e.header] = e.id  # the fake's: a correlation id sent as a header comes back here
        common = {
            "MessageID": e.esp_id,
            "MessageStream": "outbound",
            "Metadata": meta,
            "Tag": e.echo.get("Tag") or "",
        }
        if e.event == "delivered":
            return {
                "RecordType": "Delivery",
                "ServerID": 1,
                "Recipient": e.rcpt,
                "DeliveredAt": when,
                "Details": "smtp;250 2.0.0 OK",
                **common,
            }
        if e.event in ("bounce", "deferred"):
            hard = e.event == "bounce"
            return {
                "RecordType": "Bounce",
                "ID": _bounce_id(e.event_id),
                "Type": "HardBounce" if hard else "Transient",
                "TypeCode": 1 if hard else 2,
                "Email": e.rcpt,
                "From": e.sender,
                "BouncedAt": when,
                "Description": "The server was unable to deliver your message" if hard else "Message delayed",
                **common,
            }
        if e.event == "open":
            return {
                "RecordType": "Open",
                "Recipient": e.rcpt,
                "ReceivedAt": when,
                "FirstOpen": True,
                **common,
            }
        return {
            "RecordType": "Click",
            "Recipient": e.rcpt,
            "ReceivedAt": when,
            "ClickLocation": "HTML",
            "OriginalLink": "https://example.test/",
            **common,
        }

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        kind = {"Delivery": "delivered", "Open": "open", "Click": "click"}.get(data["RecordType"])
        if kind is None:
            kind = "bounce" if data.get("Type") == "HardBounce" else "deferred"
        return [
            {
                "event": kind,
                "id": data.get("Metadata", {}).get(header, data.get("Metadata", {}).get("mailstorm_id")),
                "esp_id": data["MessageID"],
                "rcpt": data.get("Recipient") or data.get("Email"),
                "event_id": None,  # Postmark events carry no event id of their own
            }
        ]


def _bounce_id(event_id: str) -> int:
    """Postmark's numeric bounce ID, drawn from the event id: the same on a redelivery, apart per event."""
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:6], "big")
