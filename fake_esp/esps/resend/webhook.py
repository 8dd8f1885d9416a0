"""Resend webhooks: one POST per event, {type: email.delivered | email.delivery_delayed | email.bounced
(data.bounce {type: Permanent | Transient, subType, message}) | email.suppressed (a send to a recipient
on Resend's suppression list, which it fills after hard bounces and complaints) | email.opened |
email.clicked (data.click) | email.complained, created_at, data:
{email_id, from, to: [...], subject, created_at, tags: {name: value}}}; the correlation id comes back as
the tag of its name. Resend signs through Svix: headers ``svix-id``, ``svix-timestamp`` and
``svix-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed with the endpoint's
``whsec_<base64>`` secret (base64-decoded; a signing key without that prefix is used as raw bytes).
Resend has no unsubscribe event (its audiences' unsubscribes are contact.updated). email.suppressed
(Resend's changelog "Email Suppression Visibility") carries the email's fields; its ``suppressed``
object {type, message} is the fake's (the published payload was not at hand).
Reference: https://resend.com/docs/dashboard/webhooks/event-types and
https://resend.com/docs/dashboard/webhooks/verify-webhooks-requests (Svix: https://docs.svix.com/receiving/verifying-payloads/how-manual).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import JSON, Event, WebhookFormat, iso_time, register

_TYPES = {
    "delivered": "email.delivered",
    "deferred": "email.delivery_delayed",
    "bounce": "email.bounced",
    "soft_bounce": "email.bounced",
    "dropped": "email.suppressed",
    "open": "email.opened",
    "click": "email.clicked",
    "complaint": "email.complained",
}
_BOUNCES = {
    "bounce": {"type": "Permanent", "subType": "General", "message": "Mailbox unavailable"},
    "soft_bounce": {"type": "Transient", "subType": "MailboxFull", "message": "The mailbox is full"},
}


def svix_key(signing_key: str) -> bytes:
    """The HMAC key of a Svix secret: ``whsec_<base64>`` decoded; any other string as its bytes."""
    if signing_key.startswith("whsec_"):
        try:
            return base64.b64decode(signing_key[6:], validate=True)
        except binascii.Error:
            pass
    return signing_key.encode()


def svix_headers(msg_id: str, body: bytes, signing_key: str, now: int) -> dict[str, str]:
    """The three Svix headers that sign ``body`` as message ``msg_id`` at ``now`` (epoch seconds)."""
    signed = f"{msg_id}.{now}.".encode() + body
    sig = base64.b64encode(hmac.new(svix_key(signing_key), signed, hashlib.sha256).digest()).decode()
    return {"svix-id": msg_id, "svix-timestamp": str(now), "svix-signature": f"v1,{sig}"}


def _kind(ev: dict[str, Any]) -> str:
    if ev["type"] == "email.bounced":
        return "soft_bounce" if ev["data"]["bounce"].get("type") == "Transient" else "bounce"
    return {v: k for k, v in _TYPES.items() if v != "email.bounced"}[ev["type"]]


@register
class ResendWebhook(WebhookFormat):
    name = "resend"
    kinds = frozenset(_TYPES)

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        (e,) = events
        when = iso_time(e.ts)
        data: dict[str, Any] = {
            "created_at": when,
            "email_id": e.esp_id,
            "from": e.sender,
            "to": [e.rcpt],
            "subject": "",
            "tags": {e.header: e.id} if e.id is not None else {},
        }
        if e.event in _BOUNCES:
            data["bounce"] = _BOUNCES[e.event]
        elif e.event == "dropped":
            data["suppressed"] = {"type": "OnAccountSuppressionList",
                                  "message": "The recipient is on your suppression list."}  # fmt: skip
        elif e.event == "click":
            data["click"] = {"ipAddress": "127.0.0.1", "link": "https://example.test/", "timestamp": when,
                             "userAgent": "mailstorm"}  # fmt: skip
        body = orjson.dumps({"type": _TYPES[e.event], "created_at": when, "data": data})
        # Svix signs each delivery attempt at the time it is sent (its timestamp tolerance is 5 minutes).
        return body, {**JSON, **svix_headers(f"msg_{e.event_id}", body, signing_key, int(time.time()))}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        ev = orjson.loads(body)
        data = ev["data"]
        return [
            {
                "event": _kind(ev),
                "id": (data.get("tags") or {}).get(header),
                "esp_id": data["email_id"],
                "rcpt": data["to"][0],
                "event_id": None,  # the event's id is the svix-id header, not in the body
            }
        ]
