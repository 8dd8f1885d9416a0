"""Mailjet Event API: one JSON event per POST {event: sent | bounce (hard_bounce true/false; error
greylisted: deferred) | blocked (error preblocked: a recipient Mailjet blocks after a hard bounce or a
spam report) | open | click | spam | unsub, time, MessageID, Message_GUID, email, CustomID, Payload,
customcampaign, ...}; the CustomID, EventPayload (as Payload) and CustomCampaign the send set come back;
CustomID is the correlation id when the send set none. Reference:
https://dev.mailjet.com/email/guides/webhooks/.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register

_NAMES = {"delivered": "sent", "deferred": "bounce", "soft_bounce": "bounce", "dropped": "blocked",
          "complaint": "spam", "unsubscribe": "unsub"}  # fmt: skip
_KINDS = {"sent": "delivered", "open": "open", "click": "click", "blocked": "dropped", "spam": "complaint",
          "unsub": "unsubscribe"}  # fmt: skip


@register
class MailjetWebhook(JsonFormat):
    name = "mailjet"

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": _NAMES.get(e.event, e.event),
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
            "soft_bounce": {"blocked": False, "hard_bounce": False, "error_related_to": "recipient",
                            "error": "quota exceeded"},
            "dropped": {"error_related_to": "mailjet", "error": "preblocked"},
            "complaint": {"source": "JMRPP"},
            "unsubscribe": {"mj_list_id": 0, "ip": "127.0.0.1", "geo": "", "agent": "Mozilla/5.0"},
            "open": {"ip": "127.0.0.1", "geo": "", "agent": "Mozilla/5.0"},
            "click": {"url": "https://example.test/", "ip": "127.0.0.1", "geo": "", "agent": "Mozilla/5.0"},
        }  # fmt: skip
        return out | extra[e.event]

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        out = []
        for ev in data if isinstance(data, list) else [data]:
            kind = _KINDS.get(ev["event"])
            if kind is None:
                hard, grey = ev.get("hard_bounce"), ev.get("error") == "greylisted"
                kind = "bounce" if hard else "deferred" if grey else "soft_bounce"
            out.append(
                {"event": kind, "id": ev.get("CustomID") or None, "esp_id": str(ev["MessageID"]),
                 "rcpt": ev["email"], "event_id": ev.get("_event_id")}
            )  # fmt: skip
        return out
