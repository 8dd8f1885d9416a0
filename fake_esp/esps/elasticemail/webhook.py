"""Elastic Email HTTP web notification: the documented URL parameters (transaction, messageid, to, from,
date, status: Sent | Opened | Clicked | Error | AbuseReport | Unsubscribed, category, postback),
form-encoded in the POST body —
Elastic Email itself sends them as a GET query string, which the poster (POST only) does not do; the
correlation id comes back as postback.
Reference: https://help.elasticemail.com/en/articles/4804685-notification-settings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from mailstorm.fake_esp.webhooks.formats import FORM, Event, WebhookFormat, one, parse_form, register

_STATUS = {
    "delivered": "Sent",
    "deferred": "Error",
    "bounce": "Error",
    "soft_bounce": "Error",
    "dropped": "Error",
    "open": "Opened",
    "click": "Clicked",
    "complaint": "AbuseReport",
    "unsubscribe": "Unsubscribed",
}
_CATEGORY = {"deferred": "GreyListed", "bounce": "NoMailbox", "soft_bounce": "AccountProblem",
             "dropped": "BlackListed", "complaint": "Spam"}  # fmt: skip
_TRANSIENT = ("GreyListed", "Throttled", "Timeout", "ConnectionProblem")  # ee-notifications categories


@register
class ElasticEmailWebhook(WebhookFormat):
    name = "elasticemail"
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        return urlencode(_event(one(self.name, events))).encode(), dict(FORM)

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = parse_form(body)
        kind = {"Sent": "delivered", "Opened": "open", "Clicked": "click", "AbuseReport": "complaint",
                "Unsubscribed": "unsubscribe"}.get(data["status"])  # fmt: skip
        if kind is None:
            category = data.get("category")
            errors = {"AccountProblem": "soft_bounce", "BlackListed": "dropped"}
            kind = "deferred" if category in _TRANSIENT else errors.get(category or "", "bounce")
        return [
            {"event": kind, "id": data.get("postback") or None, "esp_id": data["messageid"],
             "rcpt": data["to"], "event_id": data.get("transaction")}
        ]  # fmt: skip


def _event(e: Event) -> dict[str, str]:
    out = {
        "transaction": e.event_id,
        "messageid": e.esp_id,
        "to": e.rcpt,
        "from": e.sender,
        "date": datetime.fromtimestamp(e.ts, UTC).strftime("%m/%d/%Y %I:%M:%S %p"),
        "subject": "",
        "status": _STATUS[e.event],
        "channel": "API",
        "account": e.sender,
        "category": _CATEGORY.get(e.event, "Unknown"),
        "postback": e.id or "",
    }
    if e.event == "click":
        out["target"] = "https://example.test/"
    return out
