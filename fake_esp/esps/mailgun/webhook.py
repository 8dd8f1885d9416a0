"""Mailgun webhooks: {"signature": {timestamp, token, signature (HMAC-SHA256 of timestamp + token with
the webhook signing key)}, "event-data": {event: delivered | failed | opened | clicked | complained |
unsubscribed, user-variables, tags, message.headers.message-id (the id the send answered, without its
angle brackets), ...}}; the user variables and tags the send set come back (and the correlation id, in
user-variables). The token is drawn from the event id, so a redelivery carries the same one. ``failed``:
severity temporary (deferred, retried), permanent with reason bounce (hard), old (a soft bounce given up
after the retries) or suppress-bounce / suppress-complaint / suppress-unsubscribe (a send to a recipient
on Mailgun's bounces, complaints or unsubscribes list: dropped). Mailgun suppresses after each of those.
Reference: https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register

_KINDS = {"delivered": "delivered", "opened": "open", "clicked": "click", "complained": "complaint",
          "unsubscribed": "unsubscribe"}  # fmt: skip


def sign(timestamp: str, token: str, signing_key: str) -> str:
    """Mailgun's ``signature.signature``: hex HMAC-SHA256 of timestamp + token, keyed with the signing key."""
    return hmac.new(signing_key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()


@register
class MailgunWebhook(JsonFormat):
    name = "mailgun"
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        ts = str(int(e.ts))
        # Drawn from the event id: a redelivered event (the duplicate fault) carries the same token,
        # which receivers such as django-anymail take as the event id to deduplicate by.
        token = hashlib.sha256(f"mailgun-token:{e.event_id}".encode()).hexdigest()[:50]
        sig = sign(ts, token, signing_key)
        name, extra = {
            "delivered": ("delivered", {"delivery-status": {"code": 250, "message": "OK"}}),
            "deferred": (
                "failed",
                {
                    "severity": "temporary",
                    "reason": "generic",
                    "delivery-status": {"code": 451, "message": "try later"},
                },
            ),
            "bounce": (
                "failed",
                {
                    "severity": "permanent",
                    "reason": "bounce",
                    "delivery-status": {"code": 550, "message": "Mailbox unavailable"},
                },
            ),
            "soft_bounce": (
                "failed",
                {
                    "severity": "permanent",
                    "reason": "old",
                    "delivery-status": {"code": 452, "message": "Mailbox full", "attempt-no": 8},
                },
            ),
            "dropped": (
                "failed",
                {
                    "severity": "permanent",
                    "reason": f"suppress-{e.detail or 'bounce'}",
                    "delivery-status": {
                        "code": 605,
                        "message": "Not delivering to previously bounced address",
                    },
                },
            ),
            "open": ("opened", {"ip": "127.0.0.1"}),
            "click": ("clicked", {"ip": "127.0.0.1", "url": "https://example.test/"}),
            "complaint": ("complained", {}),
            "unsubscribe": ("unsubscribed", {"ip": "127.0.0.1"}),
        }[e.event]
        variables = dict(e.echo.get("user-variables") or {})
        if e.id is not None and e.id not in variables.values():
            variables[e.header] = e.id  # the fake's: a correlation id sent as a header comes back here
        # The send answered "<id@domain>"; Mailgun's events carry it without the angle brackets.
        domain = e.echo.get("domain") or e.sender.rpartition("@")[2] or "fake-esp.mailstorm.test"
        data = {
            "id": e.event_id,
            "timestamp": e.ts,
            "event": name,
            "recipient": e.rcpt,
            "message": {"headers": {"message-id": f"{e.esp_id}@{domain}", "from": e.sender, "to": e.rcpt}},
            "user-variables": variables,
            "tags": list(e.echo.get("tags") or []),
            **extra,
        }
        return {"signature": {"timestamp": ts, "token": token, "signature": sig}, "event-data": data}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        ed = orjson.loads(body)["event-data"]
        kind = _KINDS.get(ed["event"])
        if kind is None:
            reason = str(ed.get("reason") or "")
            if ed.get("severity") != "permanent":
                kind = "deferred"
            else:
                kind = (
                    "dropped"
                    if reason.startswith("suppress-")
                    else "soft_bounce"
                    if reason == "old"
                    else "bounce"
                )
        uv = ed.get("user-variables", {})
        return [
            {
                "event": kind,
                "id": uv.get(header, uv.get("mailstorm_id")),
                "esp_id": ed["message"]["headers"]["message-id"].rpartition("@")[0],
                "rcpt": ed["recipient"],
                "event_id": ed["id"],
            }
        ]
