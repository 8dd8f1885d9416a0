"""SparkPost webhooks: batches, a JSON array of ``{"msys": {<class>: {type, event_id, message_id,
transmission_id, rcpt_to, rcpt_meta, timestamp, ...}}}``: class ``message_event`` for delivery, delay,
bounce (``bounce_class`` 10: invalid recipient, hard; 22: mailbox full, soft), policy_rejection (a
recipient on the suppression list, which SparkPost fills after hard bounces, spam complaints and
unsubscribes) and spam_complaint; ``track_event`` for open and click; ``unsubscribe_event``
link_unsubscribe. The correlation
id comes back in ``rcpt_meta`` (the transmission's and the recipient's metadata, merged), the
transmission id the send answered as ``transmission_id``. SparkPost authenticates its webhook POSTs with
HTTP Basic (or OAuth 2.0) credentials set on the webhook: the fake sends ``Authorization: Basic`` of
the signing key when it is ``user:password`` (anymail's WEBHOOK_SECRET form), else of
``mailstorm:<signing key>``.
Reference: https://developers.sparkpost.com/api/webhooks/ and
https://support.sparkpost.com/docs/tech-resources/webhook-event-reference
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson

from mailstorm.fake_esp.webhooks.formats import JSON, Event, WebhookFormat, register

_CLASS_TYPE = {
    "delivered": ("message_event", "delivery"),
    "deferred": ("message_event", "delay"),
    "bounce": ("message_event", "bounce"),
    "soft_bounce": ("message_event", "bounce"),
    "dropped": ("message_event", "policy_rejection"),
    "open": ("track_event", "open"),
    "click": ("track_event", "click"),
    "complaint": ("message_event", "spam_complaint"),
    "unsubscribe": ("unsubscribe_event", "link_unsubscribe"),
}
_EXTRA: dict[str, dict[str, Any]] = {
    "delivered": {"raw_reason": "250 2.0.0 OK", "num_retries": "0"},
    "deferred": {
        "reason": "451 4.4.1 try later",
        "error_code": "451",
        "bounce_class": "20",
        "num_retries": "1",
    },
    "bounce": {"reason": "550 5.1.1 Mailbox unavailable", "error_code": "550", "bounce_class": "10"},
    "soft_bounce": {"reason": "452 4.2.2 Mailbox full", "error_code": "452", "bounce_class": "22"},
    "dropped": {
        "reason": "550 5.7.1 [internal] recipient address was suppressed due to customer policy",
        "error_code": "550",
        "bounce_class": "25",
    },
    "complaint": {"fbtype": "abuse", "report_by": "mailstorm.test", "report_to": "fake-esp.mailstorm.test"},
    "unsubscribe": {"ip_address": "127.0.0.1", "user_agent": "mailstorm", "mailfrom": ""},
    "open": {"ip_address": "127.0.0.1", "user_agent": "mailstorm"},
    "click": {
        "ip_address": "127.0.0.1",
        "user_agent": "mailstorm",
        "target_link_url": "https://example.test/",
    },
}


def basic_auth(signing_key: str) -> str:
    """The ``Authorization`` value SparkPost sends for a webhook with basic-auth credentials."""
    creds = signing_key if ":" in signing_key else f"mailstorm:{signing_key}"
    return "Basic " + base64.b64encode(creds.encode()).decode()


@register
class SparkPostWebhook(WebhookFormat):
    name = "sparkpost"
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        body = orjson.dumps([_event(e) for e in events])
        return body, {**JSON, "Authorization": basic_auth(signing_key)}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        kinds = {v: k for k, v in _CLASS_TYPE.items() if k != "soft_bounce"}
        out = []
        for item in orjson.loads(body):
            ((cls, ev),) = item["msys"].items()
            out.append(
                {
                    "event": _kind(kinds[(cls, ev["type"])], ev),
                    "id": (ev.get("rcpt_meta") or {}).get(header),
                    "esp_id": ev["transmission_id"],
                    "rcpt": ev["rcpt_to"],
                    "event_id": ev["event_id"],
                }
            )
        return out


def _kind(kind: str, ev: dict[str, Any]) -> str:
    """A bounce of a soft class (20-29 but 25, the admin failure) is the soft bounce."""
    soft = kind == "bounce" and ev.get("bounce_class", "").startswith("2") and ev["bounce_class"] != "25"
    return "soft_bounce" if soft else kind


def _event(e: Event) -> dict[str, Any]:
    cls, kind = _CLASS_TYPE[e.event]
    ev = {
        "type": kind,
        "event_id": e.event_id,
        # One id per message and recipient, the same in every event of it and in a redelivery.
        "message_id": hashlib.blake2b(f"{e.esp_id} {e.rcpt}".encode(), digest_size=10).hexdigest(),
        "transmission_id": e.esp_id,
        "rcpt_to": e.rcpt,
        "raw_rcpt_to": e.rcpt,
        "friendly_from": e.sender,
        "msg_from": e.sender,
        "rcpt_meta": {e.header: e.id} if e.id is not None else {},
        "rcpt_tags": [],
        "campaign_id": "",
        "subaccount_id": 0,
        "timestamp": str(int(e.ts)),
        **_EXTRA[e.event],
    }
    return {"msys": {cls: ev}}
