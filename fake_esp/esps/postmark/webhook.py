"""Postmark webhooks: {RecordType: Delivery | Bounce | SpamComplaint | Open | Click | SubscriptionChange,
MessageID, Recipient, Metadata, Tag, ...}; the Metadata and Tag the send set come back (and the
correlation id, in Metadata). Bounce types: HardBounce (1), Transient (2: deferred), SoftBounce (4096),
SMTPApiError (100007: a message sent over SMTP to an inactive recipient; over the API Postmark refuses
the send itself, 422 ErrorCode 406). Postmark deactivates a recipient after a hard bounce, a spam
complaint and an unsubscribe (SubscriptionChange with SuppressSending).
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
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

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
        if e.event in _BOUNCES:
            kind, code, text = _BOUNCES[e.event]
            return {
                "RecordType": "SpamComplaint" if e.event == "complaint" else "Bounce",
                "ID": _bounce_id(e.event_id),
                "Type": kind,
                "TypeCode": code,
                "Email": e.rcpt,
                "From": e.sender,
                "BouncedAt": when,
                "Description": text,
                "Inactive": e.event in ("bounce", "complaint", "dropped"),
                "CanActivate": True,
                **common,
            }
        if e.event == "unsubscribe":
            return {
                "RecordType": "SubscriptionChange",
                "ServerID": 1,
                "ChangedAt": when,
                "Recipient": e.rcpt,
                "Origin": "Recipient",
                "SuppressSending": True,
                "SuppressionReason": "ManualSuppression",
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
        kinds = {"Delivery": "delivered", "Open": "open", "Click": "click", "SpamComplaint": "complaint",
                 "SubscriptionChange": "unsubscribe"}  # fmt: skip
        kind = kinds.get(data["RecordType"]) or {v[0]: k for k, v in _BOUNCES.items()}[data["Type"]]
        return [
            {
                "event": kind,
                "id": data.get("Metadata", {}).get(header, data.get("Metadata", {}).get("mailstorm_id")),
                "esp_id": data["MessageID"],
                "rcpt": data.get("Recipient") or data.get("Email"),
                "event_id": None,  # Postmark events carry no event id of their own
            }
        ]


# Canonical event: (Type, TypeCode, Description) of its Bounce (or SpamComplaint) record.
_BOUNCES = {
    "bounce": ("HardBounce", 1, "The server was unable to deliver your message"),
    "deferred": ("Transient", 2, "Message delayed"),
    "soft_bounce": ("SoftBounce", 4096, "The mailbox is full"),
    "dropped": ("SMTPApiError", 100007, "You tried to send to a recipient that has been marked as inactive."),
    "complaint": ("SpamComplaint", 100001, "The subscriber explicitly marked this message as spam."),
}


def _bounce_id(event_id: str) -> int:
    """Postmark's numeric bounce ID, drawn from the event id: the same on a redelivery, apart per event."""
    return int.from_bytes(hashlib.sha256(event_id.encode()).digest()[:6], "big")
