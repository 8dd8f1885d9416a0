"""Klaviyo Create Event: ``POST /api/events`` (JSON:API), the trigger of a flow that sends an email.

Request: ``{"data": {"type": "event", "attributes": {"properties": {}, "metric": {"data": {"type":
"metric", "attributes": {"name"}}}, "profile": {"data": {"type": "profile", "attributes": {"email"}}},
"unique_id", "time", "value"}}}`` with a ``revision`` header. Auth: ``Authorization: Klaviyo-API-Key
<private key>`` (401 otherwise). Success: 202 with an empty body (Klaviyo answers no id: the ledger's
esp_id is one the fake makes). Errors: JSON:API ``{"errors": [{"id", "status", "code", "title",
"detail", "source": {"pointer"}}]}``: 400 ``invalid``, 401 ``not_authenticated``, 429 ``throttled``
("Request was throttled. Expected available in N seconds.") with Retry-After. Klaviyo counts a burst
(1 s) and a steady (1 min) fixed window; the fake's token bucket (the profile's steady rate per second,
its burst as the depth) gives both: at most the burst at once, the steady rate after. The "message" is
one event about one profile: its recipient is the profile's email. The correlation id: the event's
``properties`` key ``X-Mailstorm-Id``/``mailstorm_id``, else its ``unique_id``.
Reference: https://developers.klaviyo.com/en/reference/create_event and
https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling
"""

from __future__ import annotations

import uuid
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

_CODES = {400: "invalid", 401: "not_authenticated", 403: "permission_denied", 429: "throttled"}
_TITLES = {
    400: "Invalid input.",
    401: "Authentication credentials were not provided.",
    403: "Incorrect authentication credentials.",
    429: "Request was throttled.",
}
PREFIX = "Klaviyo-API-Key "


@register
class KlaviyoApi(EspApi):
    name = "klaviyo"
    routes = (("POST", "/api/events"), ("POST", "/api/events/"))

    def _bad(self, detail: str, pointer: str) -> BadRequest:
        return BadRequest(self.error(400, detail, pointer=pointer), f"{pointer}: {detail}")

    async def parse(self, request: web.Request) -> Submission:
        auth = request.headers.get("Authorization", "")
        key = auth[len(PREFIX) :].strip() if auth.startswith(PREFIX) else ""
        if not key:
            raise BadRequest(
                self.error(401, "Missing or invalid private key."), "Authorization: no private key"
            )
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(f"JSON parse error - {why}", "/data")
        attrs = _at(data, "data", "attributes")
        if _at(data, "data", "type") != "event" or not isinstance(attrs, dict):
            raise self._bad("The request body must be a JSON:API resource of type 'event'.", "/data")
        if not isinstance(_at(attrs, "metric", "data", "attributes", "name"), str):
            raise self._bad(
                "'metric' is a required field for the resource 'event'.", "/data/attributes/metric"
            )
        profile = _at(attrs, "profile", "data", "attributes")
        if not isinstance(profile, dict):
            raise self._bad(
                "'profile' is a required field for the resource 'event'.", "/data/attributes/profile"
            )
        email = profile.get("email")
        if not isinstance(email, str) or "@" not in email:
            # Klaviyo also takes a phone number or an external id; a pipeline that emails sends the email.
            raise self._bad(
                "A profile email is required by the fake.", "/data/attributes/profile/data/attributes/email"
            )
        props = attrs.get("properties") if isinstance(attrs.get("properties"), dict) else {}
        unique = attrs.get("unique_id") if isinstance(attrs.get("unique_id"), str) else None
        corr = next(
            (v for v in (props.get(self.correlation_header), props.get("mailstorm_id"), unique)
             if isinstance(v, str) and v),
            None,
        )  # fmt: skip
        message = ApiMessage("", (email,), corr, None, len(raw), sha256_hex(raw))
        return Submission(key, (message,))

    def new_message_id(self) -> str:
        return str(uuid.uuid4())

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        return web.Response(status=202)

    def error(
        self,
        status: int,
        message: str,
        *,
        code: str | int | None = None,
        rate: RateInfo | None = None,
        pointer: str | None = None,
    ) -> web.Response:
        detail = message
        if status == 429:
            wait = rate.retry_after_s if rate is not None else 1
            detail = f"Request was throttled. Expected available in {wait} second{'s' if wait != 1 else ''}."
        err: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "status": status,
            "code": code if isinstance(code, str) else _CODES.get(status, "error"),
            "title": _TITLES.get(status, "A server error occurred."),
            "detail": detail,
            "source": {"pointer": pointer or "/data"},
        }
        return json_response(status, {"errors": [err]}, rate.retry_after() if rate is not None else None)


def _at(value: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return value
