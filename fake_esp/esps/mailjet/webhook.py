"""Mailjet Event API: one JSON event per POST {event: sent | bounce (hard_bounce true/false) | open |
click, time, MessageID, Message_GUID, email, CustomID, Payload, customcampaign, ...}; the CustomID,
EventPayload (as Payload) and CustomCampaign the send set come back; CustomID is the correlation id when
the send set none. Reference: https://dev.mailjet.com/email/guides/webhooks/.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register


@register
class MailjetWebhook(JsonFormat):
    name = "mailjet"

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": {"delivered": "sent", "deferred": "bounce", "bounce": "bounce"}.get(e.event, e.event),
            "time": int(e.ts),
            "MessageID": int(e.esp_id) if e.esp_id.isdigit() else 0,
            "Message_GUID": str(uuid.uuid5(uuid.NAMESPACE_URL, e.esp_id)),
            "email": e.rcpt,
            "mj_campaign_id": 0,
            "mj_contact_id": 0,
            "customcampaign": e.echo.get("CustomCampaign", ""),
            "CustomID": e.echo.get("CustomID") or e.id or "",
            "Payload": e.echo.get("EventPayload", ""),
            "_event_id": e.event_id,  # not Mailjet's: Mailjet events carry no id of their own
        }
        extra = {
            "delivered": {"mj_message_id": e.esp_id, "smtp_reply": "250 2.0.0 OK"},
            "deferred": {"blocked": False, "hard_bounce": False, "error_related_to": "recipient",
                         "error": "greylisted"},
            "bounce": {"blocked": False, "hard_bounce": True, "error_related_to": "recipient",
                       "error": "user unknown"},
            "open": {"ip": "127.0.0.1", "geo": "", "agent": "Mozilla/5.0"},
            "click": {"url": "https://example.test/", "ip": "127.0.0.1", "geo": "", "agent": "Mozilla/5.0"},
        }  # fmt: skip
        return out | extra[e.event]

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        out = []
        for ev in data if isinstance(data, list) else [data]:
            kind = {"sent": "delivered", "open": "open", "click": "click"}.get(ev["event"])
            if kind is None:
                kind = "bounce" if ev.get("hard_bounce") else "deferred"
            out.append(
                {"event": kind, "id": ev.get("CustomID") or None, "esp_id": str(ev["MessageID"]),
                 "rcpt": ev["email"], "event_id": ev.get("_event_id")}
            )  # fmt: skip
        return out
