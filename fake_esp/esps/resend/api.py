"""Resend: ``POST /emails`` and ``POST /emails/batch`` (JSON).

Request: ``from``, ``to`` (an address or a list of at most 50), ``cc``, ``bcc``, ``subject``,
``html``/``text``, ``headers {name: value}``, ``tags [{name, value}]``; the batch endpoint takes a JSON
array of up to 100 of those. Auth: ``Authorization: Bearer <key>`` (401 ``missing_api_key`` without
one; an unknown key is 403 ``invalid_api_key``). Success: 200 ``{"id"}`` (batch: ``{"data": [{"id"}]}``).
Errors: ``{"statusCode", "message", "name"}``: 400 ``validation_error`` for a body that is not JSON,
422 ``missing_required_field`` / ``validation_error`` for one Resend cannot send, 429
``rate_limit_exceeded`` with the IETF draft headers ``ratelimit-limit``/``-remaining``/``-reset`` and
``retry-after``. The correlation id: the correlation header in ``headers``, else a tag of that name.
Reference: https://resend.com/docs/api-reference/emails/send-email and
https://resend.com/docs/api-reference/errors (the names and messages below are theirs).
"""

from __future__ import annotations

import uuid
from email.utils import getaddresses
from typing import Any

import orjson
from aiohttp import web

from mailstorm.fake_esp.http.api import (
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

MAX_TO = 50  # rs-send: "Max 50" recipient addresses
MAX_BATCH = 100  # rs-batch: up to 100 emails per batch call
# The error ``name`` of a status when a fault or the profile names none (rs-errors).
_NAMES = {
    400: "validation_error",
    401: "missing_api_key",
    403: "invalid_api_key",
    422: "validation_error",
    429: "rate_limit_exceeded",
    500: "application_error",
}
MISSING_KEY = (
    "Missing API key in the authorization header. Include the following header "
    "Authorization: Bearer YOUR_API_KEY in the request."
)


@register
class ResendApi(EspApi):
    name = "resend"
    routes = (("POST", "/emails"), ("POST", "/emails/batch"))

    def _bad(self, status: int, name: str, message: str) -> BadRequest:
        return BadRequest(self.error(status, message, code=name), message)

    async def parse(self, request: web.Request) -> Submission:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not key:
            raise self._bad(401, "missing_api_key", MISSING_KEY)
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(400, "validation_error", f"Invalid JSON: {why}")
        batch = request.path.endswith("/batch")
        if batch:
            if not isinstance(data, list) or not data:
                raise self._bad(
                    422, "validation_error", "The batch body must be a non-empty array of emails."
                )
            if len(data) > MAX_BATCH:
                raise self._bad(422, "validation_error", f"Too many emails: at most {MAX_BATCH} per batch.")
            messages = tuple(self._message(m, orjson.dumps(m), f"[{i}].") for i, m in enumerate(data))
        else:
            messages = (self._message(data, raw, ""),)
        return Submission(key, messages, extra={"batch": batch})

    def _message(self, item: Any, raw: bytes, at: str) -> ApiMessage:
        if not isinstance(item, dict):
            raise self._bad(422, "validation_error", f"{at or 'The body'} must be an email object.")
        for field in ("from", "to", "subject"):
            if not item.get(field):
                raise self._bad(422, "missing_required_field", f"Missing `{at}{field}` field.")
        sender = _addresses(item["from"])
        if len(sender) != 1:
            raise self._bad(422, "validation_error", f"Invalid `{at}from` field.")
        to = _addresses(item["to"])
        if not to:
            raise self._bad(422, "validation_error", f"Invalid `{at}to` field.")
        if len(to) > MAX_TO:
            raise self._bad(422, "validation_error", f"Too many recipients in `{at}to`: at most {MAX_TO}.")
        rcpts = to + _addresses(item.get("cc")) + _addresses(item.get("bcc"))
        corr, mid = self.correlation_from_headers(item.get("headers") or {})
        tags = item.get("tags")
        if corr is None and isinstance(tags, list):
            corr = next(
                (
                    t.get("value")
                    for t in tags
                    if isinstance(t, dict) and t.get("name") == self.correlation_header
                ),
                None,
            )
        return ApiMessage(
            sender[0],
            tuple(rcpts),
            corr if isinstance(corr, str) else None,
            mid,
            len(raw),
            sha256_hex(raw),
            headers=header_pairs(item.get("headers")),
        )

    def new_message_id(self) -> str:
        return str(uuid.uuid4())

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        if sub.extra.get("batch"):
            return json_response(200, {"data": [{"id": i} for i in esp_ids]})
        return json_response(200, {"id": esp_ids[0]})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        name = code if isinstance(code, str) else _NAMES.get(status, "application_error")
        headers = None
        if rate is not None:
            headers = {
                "ratelimit-limit": str(rate.limit),
                "ratelimit-remaining": str(rate.remaining),
                "ratelimit-reset": str(rate.retry_after_s),
                **{k.lower(): v for k, v in rate.retry_after().items()},
            }
        return json_response(status, {"statusCode": status, "message": message, "name": name}, headers)


def _addresses(value: Any) -> list[str]:
    """The addresses of a Resend address field (one string or a list of strings); [] when malformed."""
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if not all(isinstance(v, str) for v in items):
        return []
    found = [a for _, a in getaddresses(items) if a]
    return found if len(found) == len(items) and all("@" in a for a in found) else []
