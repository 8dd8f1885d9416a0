"""Mandrill (Mailchimp Transactional) message event webhook: form-encoded ``mandrill_events`` = a JSON
array (up to 1000) of {event: send | deferral | hard_bounce | soft_bounce | reject | open | click | spam |
unsub, _id, ts, msg: {_id, email,
sender, state, metadata, tags, ...}} whose _id is the message's (the id the send answered); the metadata and
tags the send set come back in msg (and the correlation id, in msg.metadata). A send to a recipient on
Mandrill's rejection list (hard bounces, spam complaints, unsubscribes: Mandrill adds each) is a
``reject`` event with ``msg.state`` rejected. ``X-Mandrill-Signature``:
base64 of the HMAC-SHA1, keyed with the webhook key (the signing key), of the webhook URL exactly as
configured (userinfo and query included) followed by each POST parameter's name and value, sorted by name.
Reference: https://mandrill.zendesk.com/hc/en-us/articles/205583307-Message-Event-Webhook-Format and
https://mailchimp.com/developer/transactional/guides/track-respond-activity-webhooks/#authenticating-webhook-requests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson

from mailstorm.fake_esp.webhooks.formats import FORM, Event, WebhookFormat, parse_form, register

if TYPE_CHECKING:
    from mailstorm.fake_esp.webhooks.signing import Signer

_EVENTS = {"delivered": "send", "deferred": "deferral", "bounce": "hard_bounce",
           "soft_bounce": "soft_bounce", "dropped": "reject", "open": "open", "click": "click",
           "complaint": "spam", "unsubscribe": "unsub"}  # fmt: skip
_STATES = {"delivered": "sent", "deferred": "deferred", "bounce": "bounced", "soft_bounce": "soft-bounced",
           "dropped": "rejected"}  # fmt: skip


@register
class MandrillWebhook(WebhookFormat):
    name = "mandrill"
    per_post = 1000  # mandrill_events holds up to 1000 events
    suppresses = frozenset({"bounce", "complaint", "unsubscribe"})

    def render(self, events: list[Event], *, signing_key: str = "") -> tuple[bytes, dict[str, str]]:
        body = {"mandrill_events": orjson.dumps([_event(e) for e in events]).decode()}
        return urlencode(body).encode(), dict(FORM)

    def sign(self, body: bytes, headers: dict[str, str], signer: Signer) -> tuple[bytes, dict[str, str]]:
        return body, {**headers, "X-Mandrill-Signature": signature(signer.url, body, signer.signing_key)}

    def read(self, body: bytes, header: str) -> list[dict[str, Any]]:
        kinds = {v: k for k, v in _EVENTS.items()}
        return [
            {"event": kinds[ev["event"]], "id": ev["msg"].get("metadata", {}).get(header),
             "esp_id": ev["msg"]["_id"], "rcpt": ev["msg"]["email"], "event_id": None}
            for ev in orjson.loads(parse_form(body)["mandrill_events"])
        ]  # fmt: skip


def signature(url: str, body: bytes, key: str) -> str:
    """X-Mandrill-Signature of a form-encoded ``body`` posted to ``url``."""
    params = parse_form(body)
    signed = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(key.encode(), signed.encode(), hashlib.sha1).digest()).decode()


def _metadata(e: Event) -> dict[str, Any]:
    meta = dict(e.echo.get("metadata") or {})
    if e.id is not None and e.id not in meta.values():
        meta[e.header] = e.id  # the fake's: a correlation id sent as a header comes back here
    return meta


def _event(e: Event) -> dict[str, Any]:
    state = _STATES.get(e.event, "sent")
    msg: dict[str, Any] = {
        "ts": int(e.ts),
        "_id": e.esp_id,
        "email": e.rcpt,
        "sender": e.sender,
        "subject": "",
        "tags": list(e.echo.get("tags") or []),
        "state": state,
        "metadata": _metadata(e),
    }
    if e.event == "bounce":
        msg |= {"bounce_description": "bad_mailbox", "diag": "smtp;550 5.1.1 user unknown"}
    if e.event == "soft_bounce":
        msg |= {"bounce_description": "mailbox_full", "diag": "smtp;452 4.2.2 mailbox full"}
    if e.event == "dropped":  # the rejection list's reason (Mandrill's reject_reason values)
        why = {"complaint": "spam", "unsubscribe": "unsub"}.get(e.detail, "hard-bounce")
        msg |= {"reject": {"reason": why, "detail": f"{e.rcpt} is on the rejection list"}}
    if e.event == "deferred":
        msg["smtp_events"] = [{"ts": int(e.ts), "type": "deferred", "diag": "451 4.4.1 try later"}]
    # The event's _id is the message's (Mandrill events carry no id of their own).
    out: dict[str, Any] = {"event": _EVENTS[e.event], "_id": e.esp_id, "ts": int(e.ts), "msg": msg}
    if e.event in ("open", "click", "unsubscribe"):
        out |= {"ip": "127.0.0.1", "user_agent": "Mozilla/5.0", "location": None}
    if e.event == "click":
        out["url"] = "https://example.test/"
    return out
