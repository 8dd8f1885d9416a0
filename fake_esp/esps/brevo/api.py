"""Brevo (formerly Sendinblue) transactional email: ``POST /v3/smtp/email`` (JSON).

Request: ``sender {email, name}``, ``to``/``cc``/``bcc`` ``[{email, name}]``, ``subject``,
``htmlContent``/``textContent`` or ``templateId``, ``headers {name: value}``, ``tags``, ``params``, or
``messageVersions`` (each version its own message: ``to``/``cc``/``bcc``/``subject``/``params``). Auth:
``api-key`` header (401 ``{"code": "unauthorized", "message": "Key not found"}`` otherwise). Success: 201
``{"messageId": "<...@smtp-relay.mailin.fr>"}`` (``{"messageIds": [...]}`` with messageVersions). Errors:
``{"code", "message"}`` — 400 ``missing_parameter`` / ``invalid_parameter`` / ``bad_request``; a 429
``too_many_requests`` carries Brevo's ``x-sib-ratelimit-limit``, ``x-sib-ratelimit-remaining`` and
``x-sib-ratelimit-reset`` (seconds until the window resets) and Retry-After (the fake's addition). The
correlation id: the correlation header in ``headers`` (of the version, else the message), else the
``X-Mailin-custom`` header (which Brevo echoes in its webhooks).
Reference: https://developers.brevo.com/reference/sendtransacemail,
https://developers.brevo.com/docs/limit-headers and https://developers.brevo.com/docs/api-limits
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from aiohttp import web

from mailstorm.fake_esp.esps.brevo import CUSTOM_HEADER
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

MAX_VERSION_RECIPIENTS = 99  # brevo sendtransacemail: at most 99 recipients per message version
MAX_RECIPIENTS = 2000  # brevo sendtransacemail: at most 2000 recipients per API request
_DEFAULT_CODES = {400: "bad_request", 401: "unauthorized", 403: "permission_denied", 404: "not_found",
                  413: "document_too_large", 429: "too_many_requests"}  # fmt: skip


@register
class BrevoApi(EspApi):
    name = "brevo"
    routes = (("POST", "/v3/smtp/email"),)

    def _bad(self, code: str, message: str) -> BadRequest:
        return BadRequest(json_response(400, {"code": code, "message": message}), message)

    async def parse(self, request: web.Request) -> Submission:
        key = request.headers.get("api-key", "").strip()
        if not key:
            raise BadRequest(self.error(401, "Key not found", code="unauthorized"), "api-key: missing")
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad("bad_request", f"Input must be a valid JSON object: {why}")
        if not isinstance(data, dict):
            raise self._bad("bad_request", "Input must be a valid JSON object")
        sender = data.get("sender")
        email = sender.get("email") if isinstance(sender, dict) else None
        if not data.get("templateId") and not (isinstance(email, str) and email):
            raise self._bad("missing_parameter", "sender is missing")
        if email is not None and (not isinstance(email, str) or "@" not in email):
            raise self._bad("invalid_parameter", "sender email is not valid")
        versions = data.get("messageVersions")
        if versions is None:
            items, whole = [data], True
        elif isinstance(versions, list) and versions:
            items, whole = versions, False
        else:
            raise self._bad("invalid_parameter", "messageVersions must be a non-empty array")
        if not data.get("templateId"):
            if not any(isinstance(data.get(f), str) and data[f] for f in ("htmlContent", "textContent")):
                raise self._bad("missing_parameter", "htmlContent is missing")
            subjects = [data] if whole else [v if isinstance(v, dict) else {} for v in items]
            if not (isinstance(data.get("subject"), str) and data["subject"]) and not all(
                isinstance(v.get("subject"), str) and v["subject"] for v in subjects
            ):
                raise self._bad("missing_parameter", "subject is missing")
        top_headers = data.get("headers") if isinstance(data.get("headers"), dict) else {}
        messages = []
        total = 0
        for i, item in enumerate(items):
            where = "" if whole else f"messageVersions[{i}]."
            if not isinstance(item, dict):
                raise self._bad("invalid_parameter", f"{where or 'message'} must be an object")
            rcpts = self._rcpts(item, where)
            if not whole and len(rcpts) > MAX_VERSION_RECIPIENTS:
                raise self._bad(
                    "invalid_parameter", f"{where}to: at most {MAX_VERSION_RECIPIENTS} recipients"
                )
            total += len(rcpts)
            headers = item.get("headers") if isinstance(item.get("headers"), dict) else {}
            merged = {**top_headers, **headers}  # a version's own headers win over the message's
            corr, mid = self.correlation_from_headers(merged)
            custom = merged.get(CUSTOM_HEADER)
            custom = custom if isinstance(custom, str) and custom else None
            corr = corr or _custom_id(custom, self.correlation_header)
            body = raw if whole else orjson.dumps(item)
            # Brevo echoes X-Mailin-custom as it was sent, and the request's tags.
            tags = data.get("tags") if isinstance(data.get("tags"), list) else []
            echo = {CUSTOM_HEADER: custom, "tags": [t for t in tags if isinstance(t, str)]}
            size, sha, carried = len(body), sha256_hex(body), header_pairs(merged)
            msg = ApiMessage(email or "", tuple(rcpts), corr, mid, size, sha, echo, headers=carried)
            messages.append(msg)
        if total > MAX_RECIPIENTS:
            raise self._bad("invalid_parameter", f"at most {MAX_RECIPIENTS} recipients per request")
        return Submission(key, tuple(messages), extra={"versions": not whole})

    def _rcpts(self, item: dict[str, Any], where: str) -> list[str]:
        rcpts: list[str] = []
        for field in ("to", "cc", "bcc"):
            lst = item.get(field, [])
            if not isinstance(lst, list):
                raise self._bad("invalid_parameter", f"{where}{field} must be an array of objects")
            for r in lst:
                email = r.get("email") if isinstance(r, dict) else None
                if not isinstance(email, str) or "@" not in email:
                    raise self._bad("invalid_parameter", f"{where}{field}: email is not valid")
                rcpts.append(email)
        if not item.get("to"):
            raise self._bad("missing_parameter", f"{where}to is missing")
        return rcpts

    def new_message_id(self) -> str:
        return f"<{secrets.token_hex(16)}@smtp-relay.mailin.fr>"

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        body = {"messageIds": esp_ids} if sub.extra.get("versions") else {"messageId": esp_ids[0]}
        return json_response(201, body)

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        err = str(code) if code is not None else _DEFAULT_CODES.get(status, "internal_error")
        headers: dict[str, str] = {}
        if rate is not None:
            headers = {
                "x-sib-ratelimit-limit": str(rate.limit),
                "x-sib-ratelimit-remaining": str(rate.remaining),
                # Brevo's reset is "in the same granularity unit as the rate limit": seconds from now.
                "x-sib-ratelimit-reset": str(rate.retry_after_s),
                **rate.retry_after(),
            }
        return json_response(status, {"code": err, "message": message}, headers)


def _custom_id(custom: str | None, header: str) -> str | None:
    """The correlation id X-Mailin-custom carries: the whole value, or (a JSON object, as django-anymail
    sends metadata) its ``mailstorm_id`` / correlation-header key."""
    if custom is None or not custom.startswith("{"):
        return custom
    try:
        meta = orjson.loads(custom)
    except orjson.JSONDecodeError:
        return custom
    value = meta.get(header, meta.get("mailstorm_id")) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None
