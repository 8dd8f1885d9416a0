"""HubSpot single-send: ``POST /marketing/v3/transactional/single-email/send`` (JSON).

Request: ``emailId`` (the HubSpot email to send, an integer), ``message {to, from, sendId, cc, bcc,
replyTo}``, ``contactProperties {}``, ``customProperties {}``. Auth: ``Authorization: Bearer <private
app token>`` (401 otherwise). Success: 200 ``{"status": "PENDING", "statusId", "requestedAt"}`` (the
statusId is the ledger's esp_id). Errors: ``{"status": "error", "message", "correlationId",
"category"}``: 400 ``VALIDATION_ERROR``, 401 ``INVALID_AUTHENTICATION``; a 429 is ``{"status": "error",
"message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT",
"correlationId", "policyName": "TEN_SECONDLY_ROLLING"}`` with ``X-HubSpot-RateLimit-Max``,
``-Remaining`` and ``-Interval-Milliseconds``. The profile enforces the 10-second window (its rate and
burst); its ``daily_quota`` is for sizing, and a throttle fault whose bucket refills over a day
(``rate: 7.52, burst: 650000``) enforces the daily limit: its 429 names ``policyName: "DAILY"`` with
``X-HubSpot-RateLimit-Daily`` and ``-Daily-Remaining``. The correlation id:
``customProperties`` key ``X-Mailstorm-Id``/``mailstorm_id``, else ``message.sendId`` (HubSpot sends at
most one email per sendId: a pipeline's natural message id).
Reference: https://developers.hubspot.com/docs/api/marketing/transactional-emails and
https://developers.hubspot.com/docs/api/usage-details (the 429 body and headers).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from mailstorm.fake_esp.http.api import (
    ApiMessage,
    BadRequest,
    EspApi,
    RateInfo,
    Submission,
    json_response,
    load_json,
    register,
    sha256_hex,
)

_CATEGORIES = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND"}
WINDOW_MS = 10_000  # hs-limits: the burst window is 10 seconds
DAILY_WINDOW_S = 3_600  # a throttle refilling slower than this models the daily limit, not the window
NO_TOKEN = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find "
    "more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


@register
class HubSpotApi(EspApi):
    name = "hubspot"
    routes = (("POST", "/marketing/v3/transactional/single-email/send"),)

    def _bad(self, message: str) -> BadRequest:
        return BadRequest(self.error(400, message), message)

    async def parse(self, request: web.Request) -> Submission:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key:
            raise BadRequest(self.error(401, NO_TOKEN), "Authorization: no Bearer token")
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(f"Invalid input JSON: {why}")
        if not isinstance(data, dict):
            raise self._bad("Invalid input JSON: the body must be an object")
        if not isinstance(data.get("emailId"), int) or isinstance(data["emailId"], bool):
            raise self._bad("Property values were not valid: emailId is required and must be an integer")
        msg = data.get("message")
        to = msg.get("to") if isinstance(msg, dict) else None
        if not isinstance(to, str) or "@" not in to:
            raise self._bad("Property values were not valid: message.to is required and must be an email")
        rcpts = [to] + [a for f in ("cc", "bcc") for a in _strings(msg.get(f))]
        sender = msg.get("from") if isinstance(msg.get("from"), str) else ""
        props = data.get("customProperties") if isinstance(data.get("customProperties"), dict) else {}
        corr = next(
            (v for v in (props.get(self.correlation_header), props.get("mailstorm_id"), msg.get("sendId"))
             if isinstance(v, str) and v),
            None,
        )  # fmt: skip
        return Submission(key, (ApiMessage(sender, tuple(rcpts), corr, None, len(raw), sha256_hex(raw)),))

    def new_message_id(self) -> str:
        return uuid.uuid4().hex  # the send's statusId

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return json_response(200, {"status": "PENDING", "statusId": esp_ids[0], "requestedAt": now})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
        if status != 429:
            body["category"] = code if isinstance(code, str) else _CATEGORIES.get(status, "INTERNAL_ERROR")
            return json_response(status, body)
        # A throttle whose bucket takes hours to refill is the daily limit (a fault modelling it, see
        # docs/profiles.md); anything shorter is the rolling 10-second window.
        daily = rate is not None and rate.window_s is not None and rate.window_s >= DAILY_WINDOW_S
        policy = "DAILY" if daily else "TEN_SECONDLY_ROLLING"
        body |= {"message": f"You have reached your {policy.lower()} limit.", "errorType": "RATE_LIMIT",
                 "policyName": policy}  # fmt: skip
        headers = None
        if rate is not None:
            if daily:
                headers = {
                    "X-HubSpot-RateLimit-Daily": str(rate.limit),
                    "X-HubSpot-RateLimit-Daily-Remaining": "0",
                }
            else:
                headers = {
                    "X-HubSpot-RateLimit-Interval-Milliseconds": str(WINDOW_MS),
                    "X-HubSpot-RateLimit-Max": str(rate.limit),
                    "X-HubSpot-RateLimit-Remaining": str(rate.remaining),
                }
            headers |= rate.retry_after()
        return json_response(status, body, headers)


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and "@" in v] if isinstance(value, list) else []
