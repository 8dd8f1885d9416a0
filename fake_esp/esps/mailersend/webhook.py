"""MailerSend activity webhooks: one POST per event, {type: "activity.<t>", created_at, webhook_id, data:
{object: "activity", id, type: delivered | soft_bounced | hard_bounced | opened | clicked |
spam_complaint | unsubscribed, created_at,
email: {id, from, subject, status, tags, headers, message: {id}, recipient: {email}}, morph}}, signed
with the webhook's signing secret: header ``Signature`` = hex HMAC-SHA256 of the body. The message id is
the ``X-Message-Id`` the send answered; the correlation id comes back in ``data.email.headers`` (the
fake echoes the request's correlation header there). MailerSend has no event for a delayed delivery
(a temporary failure it retries) nor for a send to a suppressed recipient (it answers the send with a
warning instead); it suppresses after hard bounces, spam complaints and unsubscribes.
Reference: https://developers.mailersend.com/api/v1/webhooks.html (payload and "Signing requests").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import JSON, Event, WebhookFormat, iso_time, register

_TYPES = {
    "delivered": "delivered",
    "soft_bounce": "soft_bounced",
    "bounce": "hard_bounced",
    "open": "opened",
    "click": "clicked",
    "complaint": "spam_complaint",
    "unsubscribe": "unsubscribed",
}
_MORPH = {
    "soft_bounced": {"object": "recipient_bounce", "reason": "Mailbox full"},
    "spam_complaint": {"object": "spam_complaint", "reason": None},
    "unsubscribed": {
        "object": "recipient_unsubscribe",
        "reason": "NO_LONGER_WANT",
        "readable_reason": "I no longer want to receive these emails",
    },
    "hard_bounced": {"object": "recipient_bounce", "reason": "Mailbox unavailable"},
    "opened": {"object": "open", "ip": "127.0.0.1"},
    "clicked": {"object": "click", "ip": "127.0.0.1", "url": "https://example.test/"},
}


def sign(body: bytes, signing_key: str) -> str:
    """MailerSend's ``Signature``: hex HMAC-SHA256 of the raw body with the signing secret."""
    return hmac.new(signing_key.encode(), body, hashlib.sha256).hexdigest()


@register
class MailerSendWebhook(WebhookFormat):
    name = "mailersend"
    kinds = frozenset(_TYPES)
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        (e,) = events
        kind = _TYPES[e.event]
        when = iso_time(e.ts)
        headers = [{"name": e.header, "value": e.id}] if e.id is not None else []
        body = orjson.dumps(
            {
                "type": f"activity.{kind}",
                "created_at": when,
                "webhook_id": "mailstorm",
                "data": {
                    "object": "activity",
                    "id": e.event_id,
                    "type": kind,
                    "created_at": when,
                    "email": {
                        "object": "email",
                        "id": e.esp_id,
                        "from": e.sender,
                        "subject": "",
                        "status": kind,
                        "tags": None,
                        "headers": headers,
                        "message": {"object": "message", "id": e.esp_id, "created_at": when},
                        "recipient": {"object": "recipient", "email": e.rcpt, "created_at": when},
                    },
                    "morph": _MORPH.get(kind),
                },
            }
        )
        return body, {**JSON, "Signature": sign(body, signing_key)}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)["data"]
        kind = {v: k for k, v in _TYPES.items()}[data["type"]]
        email = data["email"]
        headers = {h["name"].lower(): h["value"] for h in email.get("headers") or []}
        return [
            {
                "event": kind,
                "id": headers.get(header.lower()),
                "esp_id": email["message"]["id"],
                "rcpt": email["recipient"]["email"],
                "event_id": data["id"],
            }
        ]
