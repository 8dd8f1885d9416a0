"""Event webhook bodies for Mailjet, Brevo, Elastic Email, SendPulse and Mandrill, and their readers.

The same canonical events as mailstorm.fake_esp.webhooks.formats (delivered, deferred, bounce, open, click),
registered by format name in ``RENDERERS`` / ``READERS``; ``formats.render`` and ``formats.read_events``
hand these names over. On the wire:

    mailjet       Event API: one JSON event per POST {event: sent | bounce (hard_bounce true/false) |
                  open | click, time, MessageID, Message_GUID, email, CustomID, Payload, ...}; the
                  correlation id comes back as CustomID
    brevo         transactional webhook: one JSON event per POST {event: delivered | deferred |
                  hard_bounce | opened | click, email, id, date, ts, message-id, ts_event, ts_epoch,
                  X-Mailin-custom, ...}; the correlation id comes back as X-Mailin-custom
    elasticemail  HTTP web notification: the documented URL parameters (transaction, messageid, to, from,
                  date, status: Sent | Opened | Clicked | Error, category, postback), form-encoded in the
                  POST body — Elastic Email itself sends them as a GET query string, which the poster
                  (POST only) does not do; the correlation id comes back as postback
    sendpulse     SMTP webhook: a JSON array of events {event: delivered | undelivered | opened | clicked,
                  email, timestamp, message_id, sender, smtp_answer_code, ...}; the field set beyond
                  event/email/timestamp is the fake's (the published schema was not at hand); the
                  correlation id comes back as the correlation header's name
    mandrill      form-encoded ``mandrill_events`` = a JSON array (up to 1000) of {event: send |
                  deferral | hard_bounce | open | click, _id, ts, msg: {_id, email, sender, state,
                  metadata, ...}}; the correlation id comes back in msg.metadata. No
                  X-Mandrill-Signature (it signs the URL, which a renderer does not see).

References: https://dev.mailjet.com/email/guides/webhooks/,
https://developers.brevo.com/docs/transactional-webhooks,
https://help.elasticemail.com/en/articles/4804685-notification-settings,
https://sendpulse.com/knowledge-base/smtp/webhooks,
https://mandrill.zendesk.com/hc/en-us/articles/205583307-Message-Event-Webhook-Format.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import orjson

if TYPE_CHECKING:
    from mailstorm.fake_esp.webhooks.formats import Event

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _mailjet(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event": {"delivered": "sent", "deferred": "bounce", "bounce": "bounce"}.get(e.event, e.event),
        "time": int(e.ts),
        "MessageID": int(e.esp_id) if e.esp_id.isdigit() else 0,
        "Message_GUID": str(uuid.uuid5(uuid.NAMESPACE_URL, e.esp_id)),
        "email": e.rcpt,
        "mj_campaign_id": 0,
        "mj_contact_id": 0,
        "customcampaign": "",
        "CustomID": e.id or "",
        "Payload": "",
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


def _read_mailjet(data: Any, header: str) -> list[dict[str, Any]]:
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


_BREVO_EVENTS = {"delivered": "delivered", "deferred": "deferred", "bounce": "hard_bounce",
                 "open": "opened", "click": "click"}  # fmt: skip


def _brevo(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event": _BREVO_EVENTS[e.event],
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


def _read_brevo(data: Any, header: str) -> list[dict[str, Any]]:
    kinds = {v: k for k, v in _BREVO_EVENTS.items()} | {"soft_bounce": "deferred", "unique_opened": "open"}
    return [
        {"event": kinds[data["event"]], "id": data.get("X-Mailin-custom"), "esp_id": data["message-id"],
         "rcpt": data["email"], "event_id": data.get("uuid")}
    ]  # fmt: skip


_EE_STATUS = {
    "delivered": "Sent",
    "deferred": "Error",
    "bounce": "Error",
    "open": "Opened",
    "click": "Clicked",
}
_EE_TRANSIENT = ("GreyListed", "Throttled", "Timeout", "ConnectionProblem")  # ee-notifications categories


def _elasticemail(e: Event) -> dict[str, str]:
    out = {
        "transaction": e.event_id,
        "messageid": e.esp_id,
        "to": e.rcpt,
        "from": e.sender,
        "date": datetime.fromtimestamp(e.ts, UTC).strftime("%m/%d/%Y %I:%M:%S %p"),
        "subject": "",
        "status": _EE_STATUS[e.event],
        "channel": "API",
        "account": e.sender,
        "category": {"deferred": "GreyListed", "bounce": "NoMailbox"}.get(e.event, "Unknown"),
        "postback": e.id or "",
    }
    if e.event == "click":
        out["target"] = "https://example.test/"
    return out


def _read_elasticemail(data: dict[str, str], header: str) -> list[dict[str, Any]]:
    status = data["status"]
    kind = {"Sent": "delivered", "Opened": "open", "Clicked": "click"}.get(status)
    if kind is None:
        kind = "deferred" if data.get("category") in _EE_TRANSIENT else "bounce"
    return [
        {"event": kind, "id": data.get("postback") or None, "esp_id": data["messageid"], "rcpt": data["to"],
         "event_id": data.get("transaction")}
    ]  # fmt: skip


_SP_EVENTS = {"delivered": "delivered", "deferred": "undelivered", "bounce": "undelivered",
              "open": "opened", "click": "clicked"}  # fmt: skip


def _sendpulse(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event": _SP_EVENTS[e.event],
        "email": e.rcpt,
        "timestamp": int(e.ts),
        "message_id": e.esp_id,
        "sender": e.sender,
        "event_id": e.event_id,
        "smtp_answer_code": {"delivered": 250, "deferred": 451, "bounce": 550}.get(e.event),
    }
    if e.id is not None:
        out[e.header] = e.id
    return out


def _read_sendpulse(data: Any, header: str) -> list[dict[str, Any]]:
    out = []
    for ev in data:
        kind = {"delivered": "delivered", "opened": "open", "clicked": "click"}.get(ev["event"])
        if kind is None:
            kind = "deferred" if (ev.get("smtp_answer_code") or 500) < 500 else "bounce"
        out.append(
            {"event": kind, "id": ev.get(header), "esp_id": ev["message_id"], "rcpt": ev["email"],
             "event_id": ev.get("event_id")}
        )  # fmt: skip
    return out


_MANDRILL_EVENTS = {"delivered": "send", "deferred": "deferral", "bounce": "hard_bounce", "open": "open",
                    "click": "click"}  # fmt: skip


def _mandrill(e: Event) -> dict[str, Any]:
    state = {"delivered": "sent", "deferred": "deferred", "bounce": "bounced"}.get(e.event, "sent")
    msg: dict[str, Any] = {
        "ts": int(e.ts),
        "_id": e.esp_id,
        "email": e.rcpt,
        "sender": e.sender,
        "subject": "",
        "tags": [],
        "state": state,
        "metadata": {e.header: e.id} if e.id is not None else {},
    }
    if e.event == "bounce":
        msg |= {"bounce_description": "bad_mailbox", "diag": "smtp;550 5.1.1 user unknown"}
    if e.event == "deferred":
        msg["smtp_events"] = [{"ts": int(e.ts), "type": "deferred", "diag": "451 4.4.1 try later"}]
    out: dict[str, Any] = {"event": _MANDRILL_EVENTS[e.event], "_id": e.event_id, "ts": int(e.ts), "msg": msg}
    if e.event in ("open", "click"):
        out |= {"ip": "127.0.0.1", "user_agent": "Mozilla/5.0", "location": None}
    if e.event == "click":
        out["url"] = "https://example.test/"
    return out


def _read_mandrill(data: dict[str, str], header: str) -> list[dict[str, Any]]:
    kinds = {v: k for k, v in _MANDRILL_EVENTS.items()} | {"soft_bounce": "deferred"}
    return [
        {"event": kinds[ev["event"]], "id": ev["msg"].get("metadata", {}).get(header),
         "esp_id": ev["msg"]["_id"], "rcpt": ev["msg"]["email"], "event_id": ev["_id"]}
        for ev in orjson.loads(data["mandrill_events"])
    ]  # fmt: skip


def _one(fn: Callable[[Event], dict[str, Any]]) -> Callable[[list[Event]], tuple[bytes, dict[str, str]]]:
    def render(events: list[Event]) -> tuple[bytes, dict[str, str]]:
        (e,) = events
        return orjson.dumps(fn(e)), dict(JSON)

    return render


def _render_elasticemail(events: list[Event]) -> tuple[bytes, dict[str, str]]:
    (e,) = events
    return urlencode(_elasticemail(e)).encode(), dict(FORM)


def _render_sendpulse(events: list[Event]) -> tuple[bytes, dict[str, str]]:
    return orjson.dumps([_sendpulse(e) for e in events]), dict(JSON)


def _render_mandrill(events: list[Event]) -> tuple[bytes, dict[str, str]]:
    body = {"mandrill_events": orjson.dumps([_mandrill(e) for e in events]).decode()}
    return urlencode(body).encode(), dict(FORM)


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}


RENDERERS: dict[str, Callable[[list[Event]], tuple[bytes, dict[str, str]]]] = {
    "mailjet": _one(_mailjet),
    "brevo": _one(_brevo),
    "elasticemail": _render_elasticemail,
    "sendpulse": _render_sendpulse,
    "mandrill": _render_mandrill,
}
READERS: dict[str, Callable[[bytes, str], list[dict[str, Any]]]] = {
    "mailjet": lambda body, header: _read_mailjet(orjson.loads(body), header),
    "brevo": lambda body, header: _read_brevo(orjson.loads(body), header),
    "elasticemail": lambda body, header: _read_elasticemail(_form(body), header),
    "sendpulse": lambda body, header: _read_sendpulse(orjson.loads(body), header),
    "mandrill": lambda body, header: _read_mandrill(_form(body), header),
}
FORMATS: tuple[str, ...] = tuple(RENDERERS)


def render(fmt: str, events: list[Event]) -> tuple[bytes, dict[str, str]]:
    if fmt not in RENDERERS:
        raise ValueError(f"unknown webhook format {fmt!r}")
    return RENDERERS[fmt](events)


def read_events(fmt: str, body: bytes, header: str) -> list[dict[str, Any]]:
    if fmt not in READERS:
        raise ValueError(f"unknown webhook format {fmt!r}")
    return READERS[fmt](body, header)


__all__ = ["FORMATS", "READERS", "RENDERERS", "read_events", "render"]
