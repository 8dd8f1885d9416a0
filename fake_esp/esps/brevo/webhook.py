"""Brevo transactional webhook: one JSON event per POST {event: delivered | deferred | hard_bounce |
soft_bounce | blocked | opened | click | spam | unsubscribe, email, id, date, ts, message-id, ts_event,
ts_epoch, tags, X-Mailin-custom, ...}; the X-Mailin-custom header and tags the send set come back as they
were sent, and (the fake's) the correlation id under the correlation header's name. ``blocked``: a send
to a recipient Brevo has blocklisted (after a hard bounce, a spam complaint or an unsubscribe).
Reference: https://developers.brevo.com/docs/transactional-webhooks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from mailstorm.fake_esp.esps.brevo import CUSTOM_HEADER
from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register

_EVENTS = {"delivered": "delivered", "deferred": "deferred", "bounce": "hard_bounce",
           "soft_bounce": "soft_bounce", "dropped": "blocked", "open": "opened", "click": "click",
           "complaint": "spam", "unsubscribe": "unsubscribe"}  # fmt: skip


@register
class BrevoWebhook(JsonFormat):
    name = "brevo"
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": _EVENTS[e.event],
            "email": e.rcpt,
            "id": 1,  # Brevo: the webhook's id, the same for every post to one URL
            "date": datetime.fromtimestamp(e.ts, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "ts": int(e.ts),
            "message-id": e.esp_id,
            "ts_event": int(e.ts),
            "subject": "",
            "sending_ip": "127.0.0.1",
            "ts_epoch": int(e.ts * 1000),
            "tags": list(e.echo.get("tags") or []),
            "uuid": e.event_id,
        }
        if e.echo.get(CUSTOM_HEADER):
            out[CUSTOM_HEADER] = e.echo[CUSTOM_HEADER]  # as the sender set it (django-anymail: JSON metadata)
        if e.id is not None:
            out[e.header] = e.id  # the fake's: the correlation id, whichever way it was sent
        extra = {
            "deferred": {"reason": "451 4.4.1 try later"},
            "bounce": {"reason": "550 5.1.1 user unknown"},
            "soft_bounce": {"reason": "452 4.2.2 mailbox full"},
            "dropped": {"reason": "blocked: the contact is blocklisted"},
            "click": {"link": "https://example.test/"},
        }
        return out | extra.get(e.event, {})

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        kinds = {v: k for k, v in _EVENTS.items()} | {"unique_opened": "open", "complaint": "complaint"}
        return [
            {"event": kinds[data["event"]], "id": data.get(header), "esp_id": data["message-id"],
             "rcpt": data["email"], "event_id": data.get("uuid")}
        ]  # fmt: skip
