"""Mailchimp Transactional (Mandrill): ``POST /api/1.0/messages/send.json`` (JSON, key in the body).

Request: ``{"key", "message": {html, text, subject, from_email, from_name, to: [{email, name, type:
to|cc|bcc}], headers {name: value}, metadata {k: v}, tags}, "async", "ip_pool", "send_at"}``. One request
is one message. Auth: the ``key`` field (401 ``Invalid_Key`` otherwise). The official SDK
(mailchimp-transactional) posts to ``/api/1.3/...``; both versions, with and without the ``.json`` output
suffix, are served. Success: 200, one entry per recipient ``{email, status: "sent", reject_reason,
queued_reason, _id}`` (the recipients share the message's ``_id`` here). Errors: ``{"status": "error",
"code", "name", "message"}``: 400 ``ValidationError`` for a missing or invalid payload and 401
``Invalid_Key`` (both since 2023: earlier Mandrill answered 500), 429 for a throttle. Mandrill publishes
no rate-limit headers (over its hourly quota it backlogs: status "queued", queued_reason
"hourly-quota-exhausted": a quota fault with ``over: queue``, delivered when the next hour begins), so a
429 carries the error body and Retry-After (the fake's). A recipient on Mandrill's rejection list (a hard
bounce, a spam complaint, an unsubscribe) is answered ``status: "rejected"``, ``reject_reason``
hard-bounce / spam / unsub (and its ``reject`` webhook event follows). The correlation id: the
correlation header in ``message.headers``, else a ``message.metadata`` key of that name or
``mailstorm_id`` (metadata comes back in Mandrill's webhooks). Reference:
https://mailchimp.com/developer/transactional/api/messages/send-new-message/, the release notes
https://mailchimp.com/developer/release-notes/changing-api-server-response-for-client-errors/ and
https://mailchimp.com/developer/release-notes/added-support-for-401-unauthorized-response-code/
"""

from __future__ import annotations

import secrets
from email.utils import getaddresses

from aiohttp import web

from mailstorm.fake_esp.http.api import (
    QUEUED,
    SUPPRESSED,
    ApiMessage,
    BadRequest,
    EspApi,
    RateInfo,
    Submission,
    header_pairs,
    json_response,
    load_json,
    register,
    sha256_hex,
)

# The error name (and Mandrill's numeric code) for a status when a fault names none; 429 and 503 names
# are the fake's (no published name).
_DEFAULT_NAMES = {400: "ValidationError", 401: "Invalid_Key", 404: "Unknown_Message",
                  429: "Too_Many_Requests", 500: "GeneralError", 503: "ServiceUnavailable"}  # fmt: skip
_CODES = {"ValidationError": -2, "Invalid_Key": -1}
# queued_reason by what held the message: past the hourly quota (a quota fault with over: queue), or a
# backlog (values of Mandrill's queued_reason, from the send API's reference).
_QUEUED_REASONS = {"quota": "hourly-quota-exhausted", "backlog": "sending-backlogged"}


@register
class MandrillApi(EspApi):
    name = "mandrill"
    answers_suppressed = True
    routes = tuple(("POST", f"/api/{v}/messages/send{ext}") for v in ("1.0", "1.3") for ext in (".json", ""))

    def _bad(self, message: str) -> BadRequest:
        return BadRequest(self.error(400, f"Validation error: {message}", code="ValidationError"), message)

    async def parse(self, request: web.Request) -> Submission:
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(f"the request body is not valid JSON: {why}")
        if not isinstance(data, dict):
            raise self._bad("the request body must be a JSON object")
        key = data.get("key")
        if not isinstance(key, str) or not key:
            raise BadRequest(self.error(401, "Invalid API key", code="Invalid_Key"), "key: missing")
        msg = data.get("message")
        if not isinstance(msg, dict):
            raise self._bad('{"message":"Sorry, this field can\'t be left blank."}')
        sender = msg.get("from_email")
        if not isinstance(sender, str) or "@" not in sender:
            raise self._bad('{"message":{"from_email":"An email address must contain a single @"}}')
        to = msg.get("to")
        if not isinstance(to, list) or not to:
            raise self._bad('{"message":{"to":"Sorry, this field can\'t be left blank."}}')
        rcpts: list[str] = []
        for i, r in enumerate(to):
            email = r.get("email") if isinstance(r, dict) else None
            addr = getaddresses([email])[0][1] if isinstance(email, str) else ""
            if "@" not in addr:
                raise self._bad(
                    f'{{"message":{{"to":{{"{i}":{{"email":"An email address must contain a single @"}}}}}}}}'
                )
            if r.get("type", "to") not in ("to", "cc", "bcc"):
                raise self._bad(f'{{"message":{{"to":{{"{i}":{{"type":"must be one of to, cc or bcc"}}}}}}}}')
            rcpts.append(addr)
        if not any(isinstance(msg.get(f), str) and msg[f] for f in ("html", "text")):
            raise self._bad('{"message":{"html":"Provide either html or text content"}}')
        headers = msg.get("headers") if isinstance(msg.get("headers"), dict) else {}
        corr, mid = self.correlation_from_headers(headers)
        meta = msg.get("metadata") if isinstance(msg.get("metadata"), dict) else {}
        corr = corr or _str(meta.get(self.correlation_header)) or _str(meta.get("mailstorm_id"))
        tags = msg.get("tags") if isinstance(msg.get("tags"), list) else []
        echo = {"metadata": meta, "tags": [t for t in tags if isinstance(t, str)]}  # echoed in msg
        carried = header_pairs(headers)
        sent = ApiMessage(sender, tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), echo, headers=carried)
        return Submission(key, (sent,))

    def new_message_id(self) -> str:
        return secrets.token_hex(16)  # Mandrill _ids are 32 hex characters

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        (m,) = sub.messages
        held = sub.extra.get(QUEUED)  # accepted into the backlog: "queued", and why
        status = "queued" if held else "sent"
        why = _QUEUED_REASONS.get(held, "sending-backlogged") if held else None
        gone = (sub.extra.get(SUPPRESSED) or [{}])[0]
        body = [
            {"email": r, "status": status, "reject_reason": None, "queued_reason": why, "_id": esp_ids[0]}
            if r not in gone
            else {"email": r, "status": "rejected", "reject_reason": _REJECT_REASONS.get(gone[r], "custom"),
                  "queued_reason": None, "_id": esp_ids[0]}
            for r in m.rcpts
        ]  # fmt: skip
        return json_response(200, body)

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        name = str(code) if code is not None else _DEFAULT_NAMES.get(status, "GeneralError")
        body = {"status": "error", "code": _CODES.get(name, -1), "name": name, "message": message}
        headers = rate.retry_after() if rate is not None else None
        return json_response(status, body, headers)


# What put a recipient on the rejection list -> Mandrill's reject_reason.
_REJECT_REASONS = {"bounce": "hard-bounce", "complaint": "spam", "unsubscribe": "unsub"}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
