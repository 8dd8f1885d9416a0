"""MailerSend: ``POST /v1/email`` and ``POST /v1/bulk-email`` (JSON).

Request: ``from {email, name}``, ``to [{email, name}]`` (1 to 50, with ``cc``/``bcc`` at most 10 each),
``subject``, ``text``/``html`` (or ``template_id``), ``headers [{name, value}]``, ``tags``; the bulk
endpoint takes a JSON array of up to 500 of those. Auth: ``Authorization: Bearer <token>`` (401
``{"message": "Unauthenticated."}`` otherwise). Success: 202 with an empty body and ``X-Message-Id``
(bulk: 202 ``{"message", "bulk_email_id"}``). Errors: MailerSend is a Laravel application, so a body it
cannot validate, unparseable JSON included, is a 422 ``{"message", "errors": {field: [message]}}``; a 429
is ``{"message": "Too Many Attempts."}`` with ``X-RateLimit-Limit``/``X-RateLimit-Remaining`` and
``Retry-After``. Recipients MailerSend suppresses (after a hard bounce, a spam complaint or an
unsubscribe) are not sent to: the 202 then carries ``{"warnings": [{type: SOME_SUPPRESSED, warning,
recipients: [{email, name, reasons}]}]}``, and when there is no one left ALL_SUPPRESSED and no
``X-Message-Id``. The correlation id: the correlation header in ``headers``.
Reference: https://developers.mailersend.com/api/v1/email.html and
https://developers.mailersend.com/general.html#validation-errors (the shapes below are theirs).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from aiohttp import web

from mailstorm.fake_esp.http.api import (
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

MAX_TO = 50  # ms-email: "Minimum 1, maximum 50" to recipients
MAX_CC = 10  # ms-email: cc and bcc, at most 10 each
MAX_BULK = 500  # ms-bulk: up to 500 email objects per bulk request


@register
class MailerSendApi(EspApi):
    name = "mailersend"
    routes = (("POST", "/v1/email"), ("POST", "/v1/bulk-email"))
    refuses_suppressed = True

    def _bad(self, field: str, message: str) -> BadRequest:
        body = {"message": message, "errors": {field: [message]}}
        return BadRequest(json_response(422, body), f"{field}: {message}")

    async def parse(self, request: web.Request) -> Submission:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key:
            raise BadRequest(self.error(401, "Unauthenticated."), "Authorization: missing Bearer token")
        raw = await request.read()
        data, why = load_json(raw)
        bulk = request.path.endswith("/bulk-email")
        if bulk:
            if why is not None or not isinstance(data, list) or not data:
                raise self._bad("0", "The request body must be a non-empty array of email objects.")
            if len(data) > MAX_BULK:
                raise self._bad(str(MAX_BULK), f"The bulk request may contain at most {MAX_BULK} emails.")
            messages = tuple(self._message(m, orjson.dumps(m), f"{i}.") for i, m in enumerate(data))
        else:
            # Laravel reads an unparseable body as no input: every required field is then missing.
            item = data if why is None and isinstance(data, dict) else {}
            messages = (self._message(item, raw, ""),)
        return Submission(key, messages, extra={"bulk": bulk})

    def _message(self, item: Any, raw: bytes, at: str) -> ApiMessage:
        if not isinstance(item, dict):
            raise self._bad(at.rstrip(".") or "0", "The email must be an object.")
        sender = item.get("from")
        email = sender.get("email") if isinstance(sender, dict) else None
        if not isinstance(email, str) or "@" not in email:
            raise self._bad(f"{at}from.email", f"The {at}from.email field is required.")
        rcpts: list[str] = []
        for field, most in (("to", MAX_TO), ("cc", MAX_CC), ("bcc", MAX_CC)):
            value = item.get(field)
            if value is None and field != "to":
                continue
            if not isinstance(value, list) or (field == "to" and not value):
                raise self._bad(f"{at}{field}", f"The {at}{field} field is required and must be an array.")
            if len(value) > most:
                raise self._bad(f"{at}{field}", f"The {at}{field} may not have more than {most} items.")
            for i, r in enumerate(value):
                addr = r.get("email") if isinstance(r, dict) else None
                if not isinstance(addr, str) or "@" not in addr:
                    name = f"{at}{field}.{i}.email"
                    raise self._bad(name, f"The {name} must be a valid email address.")
                rcpts.append(addr)
        if not any(isinstance(item.get(k), str) and item[k] for k in ("text", "html", "template_id")):
            raise self._bad(
                f"{at}text", f"The {at}text field is required when none of html / template id are present."
            )
        corr, mid = self.correlation_from_headers(_pairs(item.get("headers")))
        carried = header_pairs(item.get("headers"))
        return ApiMessage(email, tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), headers=carried)

    def new_message_id(self) -> str:
        return secrets.token_hex(12)  # MailerSend ids are 24 hex digits

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        if sub.extra.get("bulk"):
            return _bulk()
        gone = (sub.extra.get(SUPPRESSED) or [{}])[0]
        if gone:
            return json_response(202, _warning("SOME_SUPPRESSED", gone), {"X-Message-Id": esp_ids[0]})
        # An empty body that still names a Content-Type (Laravel's default; anymail reads the header).
        return web.Response(status=202, content_type="text/html", headers={"X-Message-Id": esp_ids[0]})

    def suppressed(self, sub: Submission, why: dict[str, str]) -> web.Response:
        return _bulk() if sub.extra.get("bulk") else json_response(202, _warning("ALL_SUPPRESSED", why))

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        headers = None
        if rate is not None:
            headers = {
                "X-RateLimit-Limit": str(rate.limit),
                "X-RateLimit-Remaining": str(rate.remaining),
                **rate.retry_after(),
            }
        return json_response(status, {"message": message}, headers)


_REASONS = {"bounce": "hard_bounced", "complaint": "spam_complaint", "unsubscribe": "unsubscribed"}
_WARNINGS = {
    "SOME_SUPPRESSED": "Some of the recipients have not received this email because they are suppressed.",
    "ALL_SUPPRESSED": "None of the recipients were sent this email because they are all suppressed.",
}


def _bulk() -> web.Response:
    """A bulk request's answer, whatever becomes of its messages (they are sent later)."""
    body = {"message": "The bulk email is being processed.", "bulk_email_id": secrets.token_hex(12)}
    return json_response(202, body)


def _warning(kind: str, why: dict[str, str]) -> dict[str, Any]:
    """MailerSend's suppression warning naming each suppressed recipient and why."""
    recipients = [
        {"email": r, "name": None, "reasons": [_REASONS.get(w, "blocklisted")]} for r, w in why.items()
    ]
    return {"warnings": [{"type": kind, "warning": _WARNINGS[kind], "recipients": recipients}]}


def _pairs(headers: Any) -> dict[str, Any]:
    """MailerSend's ``headers [{name, value}]`` (lower-case keys) as the name/value pairs the base reads."""
    if not isinstance(headers, list):
        return {}
    return {
        h["name"]: h.get("value") for h in headers if isinstance(h, dict) and isinstance(h.get("name"), str)
    }
