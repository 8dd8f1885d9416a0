"""Amazon SES events through SNS: an SNS HTTP notification ({Type: "Notification", MessageId, TopicArn,
Message, ...}, with x-amz-sns-* headers) whose Message is the SES event JSON ({eventType: Delivery |
Bounce | DeliveryDelay | Open | Click | Complaint | Subscription, mail: {messageId, headers, tags, ...},
delivery | ...}); the message's headers (as sent) come back in mail.headers, the send's EmailTags in
mail.tags ({name: [value]}), and the correlation id in the tags (mailstorm_id) and headers. Bounces:
Permanent/General (hard), Transient/MailboxFull (soft), Permanent/OnAccountSuppressionList (a send to a
recipient on the account's suppression list, which SES fills after hard bounces and complaints: SES
accepts the send and posts this bounce) and Permanent/Suppressed (the global list: the simulator's
suppressionlist@). Unsubscribe is SES's Subscription event (list management's unsubscribe-all).
Signed as SNS signs (``sign``, with the run's SNS key: mailstorm.fake_esp.esps.ses.sns); the first POST
to a new endpoint is SNS's SubscriptionConfirmation (``handshake``).
References: https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html,
https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from mailstorm.fake_esp.webhooks.formats import Event, WebhookFormat, iso_time, one, register

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailstorm.fake_esp.webhooks.signing import Signer, WebhookKeys
    from mailstorm.ledger import Record

SNS_TOPIC = "arn:aws:sns:us-east-1:000000000000:mailstorm-ses-events"
_SES_TYPES = {
    "delivered": "Delivery",
    "deferred": "DeliveryDelay",
    "bounce": "Bounce",
    "soft_bounce": "Bounce",
    "dropped": "Bounce",
    "open": "Open",
    "click": "Click",
    "complaint": "Complaint",
    "unsubscribe": "Subscription",
}
# Canonical bounce-like event: (bounceType, bounceSubType, status, diagnosticCode).
_BOUNCES = {
    "bounce": ("Permanent", "General", "5.1.1", "smtp; 550 5.1.1 user unknown"),
    "soft_bounce": ("Transient", "MailboxFull", "4.2.2", "smtp; 452 4.2.2 mailbox full"),
    "dropped": ("Permanent", "OnAccountSuppressionList", "5.1.1",
                "Amazon SES did not send the message to this address because it is on the suppression list "
                "for your account."),
}  # fmt: skip
_GLOBAL = ("Permanent", "Suppressed", "5.1.1", "Amazon SES has suppressed sending to this address because it "
           "has a recent history of bouncing as an invalid address.")  # fmt: skip


@register
class SesWebhook(WebhookFormat):
    name = "ses"

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        note = _sns(one(self.name, events))
        headers = {
            "Content-Type": "text/plain; charset=UTF-8",
            "x-amz-sns-message-type": "Notification",
            "x-amz-sns-message-id": note["MessageId"],
            "x-amz-sns-topic-arn": SNS_TOPIC,
        }
        return orjson.dumps(note), headers

    def sign(self, body: bytes, headers: dict[str, str], signer: Signer) -> tuple[bytes, dict[str, str]]:
        if signer.keys is None:
            return body, headers
        from mailstorm.fake_esp.esps.ses import sns  # the keys' code: not for who only reads formats

        note = orjson.loads(body)
        note["UnsubscribeURL"] = sns.unsubscribe_url(signer.control)
        return orjson.dumps(sns.signed(note, signer)), headers

    def handshake(self, signer: Signer) -> tuple[bytes, dict[str, str]] | None:
        if signer.keys is None:
            return None
        from mailstorm.fake_esp.esps.ses import sns

        return sns.confirmation(signer, iso_time(time.time()))

    def routes(self, keys: WebhookKeys, endpoint: str, write: Callable[[Record], object]) -> list[Any]:
        from mailstorm.fake_esp.esps.ses import sns

        return sns.routes(keys, endpoint, write)

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        data = orjson.loads(body)
        if data.get("Type") != "Notification":
            return []  # SNS's SubscriptionConfirmation: no event
        msg = orjson.loads(data["Message"])
        kind = {v: k for k, v in _SES_TYPES.items() if v != "Bounce"}.get(msg["eventType"])
        if kind is None:
            sub = msg["bounce"]["bounceSubType"]
            transient = msg["bounce"]["bounceType"] == "Transient"
            kind = (
                "soft_bounce" if transient else "dropped" if sub == "OnAccountSuppressionList" else "bounce"
            )
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


def _headers(e: Event) -> list[dict[str, str]]:
    """The message's headers as the send gave them (django-anymail's X-Metadata and X-Tag among them),
    and the correlation header (the fake's, when the send did not carry it)."""
    headers = list(e.echo.get("headers") or [])
    if e.id is not None and not any(h["name"].lower() == e.header.lower() for h in headers):
        headers.append({"name": e.header, "value": e.id})
    return headers


def _bounce(e: Event, when: str) -> dict[str, Any]:
    kind, sub, status, diag = _GLOBAL if e.detail == "global" else _BOUNCES[e.event]
    recipient = {"emailAddress": e.rcpt, "action": "failed", "status": status, "diagnosticCode": diag}
    return {
        "bounceType": kind,
        "bounceSubType": sub,
        "bouncedRecipients": [recipient],
        "timestamp": when,
        "feedbackId": e.event_id,
        "reportingMTA": "dns; amazonses.com",
    }


def _sns(e: Event) -> dict[str, Any]:
    when = iso_time(e.ts)
    mail = {
        "timestamp": when,
        "source": e.sender,
        "sendingAccountId": "000000000000",
        "messageId": e.esp_id,
        "destination": [e.rcpt],
        "headersTruncated": False,
        "headers": _headers(e),
        "tags": dict(e.echo.get("tags") or {}) | ({"mailstorm_id": [e.id]} if e.id is not None else {}),
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
        "complaint": {
            "complaint": {
                "complainedRecipients": [{"emailAddress": e.rcpt}],
                "timestamp": when,
                "feedbackId": e.event_id,
                "complaintSubType": None,
                "userAgent": "Mozilla/5.0",
                "complaintFeedbackType": "abuse",
                "arrivalDate": when,
            }
        },
        "unsubscribe": {
            "subscription": {
                "contactList": "mailstorm",
                "timestamp": when,
                "source": "UnsubscribeHeader",
                "newTopicPreferences": {"unsubscribeAll": True, "topicSubscriptionStatus": []},
                "oldTopicPreferences": {"unsubscribeAll": False, "topicSubscriptionStatus": []},
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
    }.get(e.event) or {"bounce": _bounce(e, when)}
    message = {"eventType": _SES_TYPES[e.event], "mail": mail, **detail}
    return {
        "Type": "Notification",
        "MessageId": e.event_id,
        "TopicArn": SNS_TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": orjson.dumps(message).decode(),
        "Timestamp": when,
        # SignatureVersion, Signature, SigningCertURL and UnsubscribeURL: ``sign`` adds them (the run's
        # key, the control API's URLs).
    }
