"""Brevo transactional webhook: one JSON event per POST {event: delivered | deferred | hard_bounce |
opened | click, email, id, date, ts, message-id, ts_event, ts_epoch, X-Mailin-custom, ...}; the
correlation id comes back as X-Mailin-custom. Reference:
https://developers.brevo.com/docs/transactional-webhooks.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register

_EVENTS = {"delivered": "delivered", "deferred": "deferred", "bounce": "hard_bounce",
           "open": "opened", "click": "click"}  # fmt: skip


@register
class BrevoWebhook(JsonFormat):
    name = "brevo"

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
            "tags": [],
            "uuid": e.event_id,
        }
        if e.id is not None:
            out["X-Mailin-custom"] = e.id
        extra = {
            "deferred": {"reason": "451 4.4.1 try later"},
            "bounce": {"reason": "550 5.1.1 user unknown"},
            "click": {"link": "https://example.test/"},
        }
        return out | extra.get(e.event, {})

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        kinds = {v: k for k, v in _EVENTS.items()} | {"soft_bounce": "deferred", "unique_opened": "open"}
        return [
            {"event": kinds[data["event"]], "id": data.get("X-Mailin-custom"), "esp_id": data["message-id"],
             "rcpt": data["email"], "event_id": data.get("uuid")}
        ]  # fmt: skip
