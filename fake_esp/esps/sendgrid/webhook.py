"""SendGrid Event Webhook: a JSON array of events ({email, timestamp, event, sg_event_id, sg_message_id,
smtp-id, ...}); custom args (the correlation id) are top-level keys. SendGrid batches: one POST carries
what has piled up (the profile's ``webhook.batch_max``). Events: delivered, deferred, bounce (``type``
bounce: hard; ``type`` blocked: the soft bounce), dropped (``reason`` Bounced Address / Spam Reporting
Address / Unsubscribed Address: a send to a suppressed recipient), open, click, spamreport, unsubscribe.
SendGrid suppresses after a bounce, a spam report and an unsubscribe (its bounce, spam report and global
unsubscribe lists). Signed Event Webhook: each POST carries
``X-Twilio-Email-Event-Webhook-Timestamp`` (epoch seconds at sending) and
``X-Twilio-Email-Event-Webhook-Signature``, base64 of the ECDSA P-256 / SHA-256 signature (DER) of the
timestamp followed by the body, by the run's key (mailstorm.fake_esp.webhooks.signing; its public key is
what the receiver verifies with, as ``sendgrid.helpers.eventwebhook.EventWebhook`` does).
Reference: https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event and
https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features.
"""

from __future__ import annotations

import base64
import time
from typing import TYPE_CHECKING, Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, JsonFormat, register

if TYPE_CHECKING:
    from mailstorm.fake_esp.webhooks.signing import Signer

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
_NAMES = {"soft_bounce": "bounce", "complaint": "spamreport"}
# A dropped event's reason, by what suppressed the recipient (SendGrid's dropped reasons).
_DROPPED = {"bounce": "Bounced Address", "complaint": "Spam Reporting Address",
            "unsubscribe": "Unsubscribed Address"}  # fmt: skip


def _kind(ev: dict[str, Any]) -> str:
    if ev["event"] == "bounce":
        return "soft_bounce" if ev.get("type") == "blocked" else "bounce"
    return {"spamreport": "complaint", "group_unsubscribe": "unsubscribe"}.get(ev["event"], ev["event"])


@register
class SendGridWebhook(JsonFormat):
    name = "sendgrid"
    array = True
    per_post = 10_000  # any count: the profile's batch_max sets how many SendGrid piles up
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def event(self, e: Event, signing_key: str = "") -> dict[str, Any]:
        # Custom args are top-level keys of each event (SendGrid's reserved keys win over them).
        args = dict(e.echo.get("custom_args") or {})
        if e.id is not None and e.id not in args.values():
            args[e.header] = e.id  # the fake's: a correlation id sent as a header comes back as an arg
        out: dict[str, Any] = args | {
            "email": e.rcpt,
            "timestamp": int(e.ts),
            "smtp-id": f"<{e.esp_id}@fake-esp.mailstorm.test>",
            "event": _NAMES.get(e.event, e.event),
            "category": list(e.echo.get("categories") or []),
            "sg_event_id": e.event_id,
            "sg_message_id": f"{e.esp_id}.filter0001.0.0",
        }
        extra = {
            "delivered": {"response": "250 2.0.0 OK"},
            "deferred": {"response": "451 4.3.0 Temporary failure", "attempt": "1"},
            "bounce": {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 Mailbox unavailable"},
            "soft_bounce": {"type": "blocked", "status": "4.2.2", "reason": "452 4.2.2 Mailbox full"},
            "dropped": {"reason": _DROPPED.get(e.detail, "Bounced Address"), "status": "5.0.0"},
            "open": {"useragent": "Mozilla/5.0", "ip": "127.0.0.1", "sg_machine_open": False},
            "click": {"useragent": "Mozilla/5.0", "ip": "127.0.0.1", "url": "https://example.test/"},
            "complaint": {},
            "unsubscribe": {},
        }
        return out | extra[e.event]

    def sign(self, body: bytes, headers: dict[str, str], signer: Signer) -> tuple[bytes, dict[str, str]]:
        if signer.keys is None:
            return body, headers
        from cryptography.hazmat.primitives import hashes  # signing only: not for who only reads formats
        from cryptography.hazmat.primitives.asymmetric import ec

        # Signed at each sending, as SendGrid does: a retry carries its own timestamp.
        ts = str(int(time.time()))
        sig = signer.keys.sendgrid_private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return body, {**headers, TIMESTAMP: ts, SIGNATURE: base64.b64encode(sig).decode()}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        return [
            {
                "event": _kind(ev),
                "id": ev.get(header, ev.get("mailstorm_id")),
                "esp_id": ev["sg_message_id"].split(".")[0],
                "rcpt": ev["email"],
                "event_id": ev["sg_event_id"],
            }
            for ev in orjson.loads(body)
        ]
