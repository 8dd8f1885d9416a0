"""Each ESP's event webhook body, built from one canonical event, and read back into canonical form.

Canonical events: delivered, deferred, bounce, open, click. On the wire:

    sendgrid  Event Webhook: a JSON array of events ({email, timestamp, event, sg_event_id,
              sg_message_id, smtp-id, ...}); custom args (the correlation id) are top-level keys
    ses       an SNS HTTP notification ({Type: "Notification", MessageId, TopicArn, Message, ...}, with
              x-amz-sns-* headers) whose Message is the SES event JSON ({eventType: Delivery | Bounce |
              DeliveryDelay | Open | Click, mail: {messageId, headers, tags, ...}, delivery | ...})
    mailgun   {"signature": {timestamp, token, signature (HMAC-SHA256)}, "event-data": {event: delivered
              | failed (severity permanent/temporary) | opened | clicked, user-variables, ...}}
    postmark  {RecordType: Delivery | Bounce (Type HardBounce / Transient) | Open | Click, MessageID,
              Recipient, Metadata, ...}

``read_events(fmt, body)`` inverts ``render`` (for receivers, tests and reports: what did the pipeline
see?) into dicts {event, id, esp_id, rcpt, event_id}.
References: SendGrid https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event, SES
https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html, SNS
https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html, Mailgun
https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhooks, Postmark
https://postmarkapp.com/developer/webhooks/webhooks-overview.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks import more_formats  # Mailjet, Brevo, Elastic Email, SendPulse, Mandrill

EVENTS: tuple[str, ...] = ("delivered", "deferred", "bounce", "open", "click")
FORMATS: tuple[str, ...] = ("sendgrid", "ses", "mailgun", "postmark", *more_formats.FORMATS)
SNS_TOPIC = "arn:aws:sns:us-east-1:000000000000:mailstorm-ses-events"


@dataclass(frozen=True, slots=True)
class Event:
    """One canonical event about one recipient of one accepted message."""

    event: str
    event_id: str
    id: str | None  # correlation id
    esp_id: str
    rcpt: str
    sender: str
    ts: float
    header: str  # the correlation header name (custom args / metadata key)


def render(fmt: str, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
    """The POST body and headers carrying ``events`` (several only for sendgrid's batches)."""
    if fmt == "sendgrid":
        return orjson.dumps([_sendgrid(e) for e in events]), {"Content-Type": "application/json"}
    (e,) = events
    if fmt == "ses":
        note = _sns(e)
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": note["MessageId"],
            "x-amz-sns-topic-arn": SNS_TOPIC,
        }
        return orjson.dumps(note), headers
    if fmt == "mailgun":
        return orjson.dumps(_mailgun(e, signing_key)), {"Content-Type": "application/json"}
    if fmt == "postmark":
        return orjson.dumps(_postmark(e)), {"Content-Type": "application/json"}
    return more_formats.render(fmt, events)


def read_events(fmt: str, body: bytes, header: str) -> list[dict[str, Any]]:
    """Canonical {event, id, esp_id, rcpt, event_id} dicts from a webhook body of format ``fmt``."""
    if fmt in more_formats.FORMATS:  # some of these bodies are form-encoded, not JSON
        return more_formats.read_events(fmt, body, header)
    data = orjson.loads(body)
    if fmt == "sendgrid":
        return [
            {
                "event": ev["event"],
                "id": ev.get(header),
                "esp_id": ev["sg_message_id"].split(".")[0],
                "rcpt": ev["email"],
                "event_id": ev["sg_event_id"],
            }
            for ev in data
        ]
    if fmt == "ses":
        msg = orjson.loads(data["Message"])
        kind = {v: k for k, v in _SES_TYPES.items()}[msg["eventType"]]
        tags = msg["mail"].get("tags", {})
        return [
            {
                "event": kind,
                "id": (tags.get("mailstorm_id") or [None])[0],
                "esp_id": msg["mail"]["messageId"],
                "rcpt": msg["mail"]["destination"][0],
                "event_id": data["MessageId"],
            }
        ]
    if fmt == "mailgun":
        ed = data["event-data"]
        kind = {"delivered": "delivered", "opened": "open", "clicked": "click"}.get(ed["event"])
        if kind is None:
            kind = "bounce" if ed.get("severity") == "permanent" else "deferred"
        return [
            {
                "event": kind,
                "id": ed.get("user-variables", {}).get(header),
                "esp_id": ed["message"]["headers"]["message-id"],
                "rcpt": ed["recipient"],
                "event_id": ed["id"],
            }
        ]
    if fmt == "postmark":
        kind = {"Delivery": "delivered", "Open": "open", "Click": "click"}.get(data["RecordType"])
        if kind is None:
            kind = "bounce" if data.get("Type") == "HardBounce" else "deferred"
        return [
            {
                "event": kind,
                "id": data.get("Metadata", {}).get(header),
                "esp_id": data["MessageID"],
                "rcpt": data.get("Recipient") or data.get("Email"),
                "event_id": None,  # Postmark events carry no event id of their own
            }
        ]
    raise ValueError(f"unknown webhook format {fmt!r}")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sendgrid(e: Event) -> dict[str, Any]:
    out: dict[str, Any] = {
        "email": e.rcpt,
        "timestamp": int(e.ts),
        "smtp-id": f"<{e.esp_id}@fake-esp.mailstorm.test>",
        "event": e.event,
        "category": [],
        "sg_event_id": e.event_id,
        "sg_message_id": f"{e.esp_id}.filter0001.0.0",
    }
    if e.id is not None:
        out[e.header] = e.id
    extra = {
        "delivered": {"response": "250 2.0.0 OK"},
        "deferred": {"response": "451 4.3.0 Temporary failure", "attempt": "1"},
        "bounce": {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 Mailbox unavailable"},
        "open": {"useragent": "Mozilla/5.0", "ip": "127.0.0.1", "sg_machine_open": False},
        "click": {"useragent": "Mozilla/5.0", "ip": "127.0.0.1", "url": "https://example.test/"},
    }
    return out | extra[e.event]


_SES_TYPES = {
    "delivered": "Delivery",
    "deferred": "DeliveryDelay",
    "bounce": "Bounce",
    "open": "Open",
    "click": "Click",
}


def _sns(e: Event) -> dict[str, Any]:
    when = _iso(e.ts)
    mail = {
        "timestamp": when,
        "source": e.sender,
        "sendingAccountId": "000000000000",
        "messageId": e.esp_id,
        "destination": [e.rcpt],
        "headersTruncated": False,
        "headers": [{"name": e.header, "value": e.id}] if e.id is not None else [],
        "tags": {"mailstorm_id": [e.id]} if e.id is not None else {},
    }
    detail: dict[str, Any] = {
        "delivered": {
            "delivery": {
                "timestamp": when,
                "processingTimeMillis": 0,
                "recipients": [e.rcpt],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "fake-esp.mailstorm.test",
            }
        },
        "deferred": {
            "deliveryDelay": {
                "timestamp": when,
                "delayType": "TransientCommunicationFailure",
                "delayedRecipients": [
                    {"emailAddress": e.rcpt, "status": "4.4.1", "diagnosticCode": "smtp; 451 4.4.1 try later"}
                ],
            }
        },
        "bounce": {
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": e.rcpt,
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    }
                ],
                "timestamp": when,
                "feedbackId": e.event_id,
            }
        },
        "open": {"open": {"ipAddress": "127.0.0.1", "timestamp": when, "userAgent": "Mozilla/5.0"}},
        "click": {
            "click": {
                "ipAddress": "127.0.0.1",
                "timestamp": when,
                "userAgent": "Mozilla/5.0",
                "link": "https://example.test/",
                "linkTags": {},
            }
        },
    }[e.event]
    message = {"eventType": _SES_TYPES[e.event], "mail": mail, **detail}
    return {
        "Type": "Notification",
        "MessageId": e.event_id,
        "TopicArn": SNS_TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": orjson.dumps(message).decode(),
        "Timestamp": when,
        "SignatureVersion": "1",
        "Signature": "bWFpbHN0b3JtLWZha2Utc2lnbmF0dXJl",  # not verifiable: this is a fake SNS
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-mailstorm.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def _mailgun(e: Event, signing_key: str) -> dict[str, Any]:
    ts = str(int(e.ts))
    token = secrets.token_hex(25)
    # Mailgun signs timestamp+token with the webhook signing key (HMAC-SHA256), as receivers verify.
    sig = hmac.new(signing_key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
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
        "open": ("opened", {"ip": "127.0.0.1"}),
        "click": ("clicked", {"ip": "127.0.0.1", "url": "https://example.test/"}),
    }[e.event]
    data = {
        "id": e.event_id,
        "timestamp": e.ts,
        "event": name,
        "recipient": e.rcpt,
        "message": {"headers": {"message-id": e.esp_id, "from": e.sender, "to": e.rcpt}},
        "user-variables": {e.header: e.id} if e.id is not None else {},
        **extra,
    }
    return {"signature": {"timestamp": ts, "token": token, "signature": sig}, "event-data": data}


def _postmark(e: Event) -> dict[str, Any]:
    when = _iso(e.ts)
    meta = {e.header: e.id} if e.id is not None else {}
    common = {
        "MessageID": e.esp_id,
        "MessageStream": "outbound",
        "Metadata": meta,
        "Tag": "",
    }
    if e.event == "delivered":
        return {
            "RecordType": "Delivery",
            "ServerID": 1,
            "Recipient": e.rcpt,
            "DeliveredAt": when,
            "Details": "smtp;250 2.0.0 OK",
            **common,
        }
    if e.event in ("bounce", "deferred"):
        hard = e.event == "bounce"
        return {
            "RecordType": "Bounce",
            "ID": int(e.ts * 1000),
            "Type": "HardBounce" if hard else "Transient",
            "TypeCode": 1 if hard else 2,
            "Email": e.rcpt,
            "From": e.sender,
            "BouncedAt": when,
            "Description": "The server was unable to deliver your message" if hard else "Message delayed",
            **common,
        }
    if e.event == "open":
        return {"RecordType": "Open", "Recipient": e.rcpt, "ReceivedAt": when, "FirstOpen": True, **common}
    return {
        "RecordType": "Click",
        "Recipient": e.rcpt,
        "ReceivedAt": when,
        "ClickLocation": "HTML",
        "OriginalLink": "https://example.test/",
        **common,
    }
