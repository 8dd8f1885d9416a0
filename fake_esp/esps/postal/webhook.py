"""Postal webhooks: one POST per event, {event: MessageSent | MessageDelayed | MessageDeliveryFailed |
MessageHeld | MessageBounced | MessageLoaded | MessageLinkClicked, timestamp, uuid, payload: {message:
{id, token, direction, message_id, to, from, subject, timestamp, tag}, status: Sent | SoftFail |
HardFail | Held, details, output, ...}}. A bounce message that comes back later (the soft bounce here) is
MessageBounced {original_message, bounce}; a message to a recipient on the server's suppression list
(Postal adds hard-failing recipients) is held: MessageHeld. Postal has no complaint or unsubscribe
events. Postal's
webhooks carry none of the message's headers: the correlation id comes back as the message's ``tag``
(the one field of the sender's that Postal echoes; a pipeline correlating Postal events sets it). Postal
signs the body with its server's RSA key: ``X-Postal-Signature`` (base64 RSA-SHA1, PKCS#1 v1.5, what
anymail verifies) and ``X-Postal-Signature-256`` (RSA-SHA256). The fake signs when the signing key is
the PEM of an RSA private key; any other key and the POST goes unsigned.
Reference: https://docs.postalserver.io/developer/webhooks and postalserver/postal lib/postal/http.rb.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailstorm.fake_esp.webhooks.formats import JSON, Event, WebhookFormat, register

_EVENTS = {
    "delivered": ("MessageSent", "Sent"),
    "deferred": ("MessageDelayed", "SoftFail"),
    "bounce": ("MessageDeliveryFailed", "HardFail"),
    "dropped": ("MessageHeld", "Held"),
    "soft_bounce": ("MessageBounced", None),
    "open": ("MessageLoaded", None),
    "click": ("MessageLinkClicked", None),
}
_OUTPUT = {
    "Sent": "250 2.0.0 OK",
    "SoftFail": "451 4.4.1 try later",
    "HardFail": "550 5.1.1 Mailbox unavailable",
    "Held": "",
}


def signatures(body: bytes, signing_key: str) -> dict[str, str]:
    """Postal's signature headers for ``body``; none when the key is not an RSA private key's PEM."""
    key = _private_key(signing_key) if "PRIVATE KEY" in signing_key else None
    if key is None:
        return {}
    sign = lambda digest: base64.b64encode(key.sign(body, padding.PKCS1v15(), digest)).decode()  # noqa: E731
    return {"X-Postal-Signature": sign(hashes.SHA1()), "X-Postal-Signature-256": sign(hashes.SHA256())}


@lru_cache(maxsize=4)
def _private_key(pem: str) -> rsa.RSAPrivateKey | None:
    """The RSA key of a PEM, loaded once: loading checks the key (~120 ms for RSA-2048, 80 times the
    signing itself), which per POST held Postal's posting to 8 events/s (bench/bench_webhooks.py)."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


@register
class PostalWebhook(WebhookFormat):
    name = "postal"
    kinds = frozenset(_EVENTS)
    suppresses = frozenset({"bounce"})

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        (e,) = events
        name, status = _EVENTS[e.event]
        message = {
            "id": int(e.esp_id) if e.esp_id.isdigit() else 0,
            "token": e.event_id[:12],
            "direction": "outgoing",
            "message_id": f"{e.esp_id}@rp.postal.example",
            "to": e.rcpt,
            "from": e.sender,
            "subject": "",
            "timestamp": e.ts,
            "spam_status": "NotChecked",
            "tag": e.id,
        }
        payload: dict[str, Any] = {"message": message}
        if e.event == "soft_bounce":  # the bounce message is a message of its own, pointing at the first
            bounce = message | {"id": message["id"] + 1, "token": e.event_id[12:24], "direction": "incoming",
                                "to": e.sender, "from": "MAILER-DAEMON@rp.postal.example",
                                "subject": "Mail delivery failed: mailbox full"}  # fmt: skip
            payload = {"original_message": message, "bounce": bounce}
        elif status is not None:
            details = "Recipient is on the suppression list" if status == "Held" else f"Message {status}"
            payload |= {"status": status, "details": details, "output": _OUTPUT[status],
                        "sent_with_ssl": True, "timestamp": e.ts, "time": 0.1}  # fmt: skip
        else:
            payload |= {"ip_address": "127.0.0.1", "user_agent": "mailstorm"}
            if e.event == "click":
                payload |= {"url": "https://example.test/", "token": e.event_id[:8]}
        body = orjson.dumps({"event": name, "timestamp": e.ts, "payload": payload, "uuid": e.event_id})
        return body, {**JSON, **signatures(body, signing_key)}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        kind = {v[0]: k for k, v in _EVENTS.items()}[data["event"]]
        message = data["payload"].get("message") or data["payload"]["original_message"]
        return [
            {
                "event": kind,
                "id": message.get("tag"),
                "esp_id": str(message["id"]),
                "rcpt": message["to"],
                "event_id": data["uuid"],
            }
        ]
