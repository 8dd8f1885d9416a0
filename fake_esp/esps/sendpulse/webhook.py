"""SendPulse SMTP webhook: a JSON array of events {event: delivered | undelivered | opened | clicked |
spam | unsubscribed, email, timestamp, message_id, sender, smtp_answer_code, ...}; the field set beyond
event/email/timestamp is the fake's (the published schema was not at hand), so is ``status`` telling an
undelivered event's kind (deferred, soft_bounce, hard_bounce, suppressed: a recipient SendPulse
blocks after a hard bounce, a spam report or an unsubscribe); the correlation id comes back under the
correlation header's name. Reference: https://sendpulse.com/knowledge-base/smtp/webhooks.
"""

from __future__ import annotations

from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register

_EVENTS = {"delivered": "delivered", "deferred": "undelivered", "bounce": "undelivered",
           "soft_bounce": "undelivered", "dropped": "undelivered", "open": "opened", "click": "clicked",
           "complaint": "spam", "unsubscribe": "unsubscribed"}  # fmt: skip
_STATUS = {"deferred": "deferred", "bounce": "hard_bounce", "soft_bounce": "soft_bounce",
           "dropped": "suppressed"}  # fmt: skip
_CODES = {"delivered": 250, "deferred": 451, "bounce": 550, "soft_bounce": 452, "dropped": 550}


@register
class SendPulseWebhook(JsonFormat):
    name = "sendpulse"
    array = True
    per_post = 10_000  # any count: the profile's batch_max sets how many pile up
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": _EVENTS[e.event],
            "email": e.rcpt,
            "timestamp": int(e.ts),
            "message_id": e.esp_id,
            "sender": e.sender,
            "event_id": e.event_id,
            "smtp_answer_code": _CODES.get(e.event),
        }
        if e.event in _STATUS:
            out["status"] = _STATUS[e.event]
        if e.id is not None:
            out[e.header] = e.id
        return out

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        out = []
        for ev in orjson.loads(body):
            kind = {"delivered": "delivered", "opened": "open", "clicked": "click", "spam": "complaint",
                    "unsubscribed": "unsubscribe"}.get(ev["event"])  # fmt: skip
            if kind is None:
                kind = {v: k for k, v in _STATUS.items()}.get(ev.get("status"), "bounce")
            out.append(
                {"event": kind, "id": ev.get(header), "esp_id": ev["message_id"], "rcpt": ev["email"],
                 "event_id": ev.get("event_id")}
            )  # fmt: skip
        return out
