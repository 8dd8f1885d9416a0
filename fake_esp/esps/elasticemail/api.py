"""Elastic Email API v4 transactional send: ``POST /v4/emails/transactional`` (JSON).

Request (EmailTransactionalMessageData): ``Recipients {To, CC, BCC}`` (lists of addresses, each may be
``Name <email>``), ``Content {Body [{ContentType, Content, Charset}], From, Subject, Headers {name:
value}, Postback, TemplateName, ...}``, ``Options``. One request is one message. Auth: the
``X-ElasticEmail-ApiKey`` header (401 otherwise). Success: 200 ``{"TransactionID", "MessageID"}``.
Errors: ``{"Error": "..."}`` with 400 for a bad request (the SDK's modeled statuses are 400, 409, 422,
503); Elastic Email publishes no rate-limit headers, so a 429 carries the same body and Retry-After (the
fake's). The correlation id: the correlation header in ``Content.Headers``, else ``Content.Postback``
(Elastic Email echoes the postback value in its notifications).
Reference: https://elasticemail.com/developers/api-documentation/rest-api#operation/emailsTransactionalPost
and the official SDK's OpenAPI models (pip package ElasticEmail 4.x).
"""

from __future__ import annotations

import secrets
import uuid
from email.utils import getaddresses

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


@register
class ElasticEmailApi(EspApi):
    name = "elasticemail"
    routes = (("POST", "/v4/emails/transactional"),)

    def _bad(self, message: str) -> BadRequest:
        return BadRequest(json_response(400, {"Error": message}), message)

    async def parse(self, request: web.Request) -> Submission:
        key = request.headers.get("X-ElasticEmail-ApiKey", "").strip()
        if not key:
            raise BadRequest(self.error(401, "Access Denied."), "X-ElasticEmail-ApiKey: missing")
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(f"Invalid request body: {why}")
        if not isinstance(data, dict):
            raise self._bad("Invalid request body: expected an EmailTransactionalMessageData object")
        recipients = data.get("Recipients")
        if not isinstance(recipients, dict):
            raise self._bad("Recipients is required")
        rcpts: list[str] = []
        for field in ("To", "CC", "BCC"):
            lst = recipients.get(field) or []
            if not isinstance(lst, list) or not all(isinstance(a, str) for a in lst):
                raise self._bad(f"Recipients.{field} must be a list of email addresses")
            for _, addr in getaddresses(lst):
                if "@" not in addr:
                    raise self._bad(f"Recipients.{field}: '{addr}' is not a valid email address")
                rcpts.append(addr)
        if not recipients.get("To"):
            raise self._bad("Recipients.To is required")
        content = data.get("Content")
        if not isinstance(content, dict):
            raise self._bad("Content is required")
        sender = getaddresses([content["From"]]) if isinstance(content.get("From"), str) else []
        if not sender or "@" not in sender[0][1]:
            raise self._bad("Content.From is required and must be an email address")
        body = content.get("Body")
        if not content.get("TemplateName") and (
            not isinstance(body, list)
            or not body
            or not all(isinstance(p, dict) and isinstance(p.get("ContentType"), str) for p in body)
        ):
            raise self._bad("Content.Body is required (or Content.TemplateName)")
        headers = content.get("Headers") if isinstance(content.get("Headers"), dict) else {}
        corr, mid = self.correlation_from_headers(headers)
        postback = content.get("Postback")
        corr = corr or (postback if isinstance(postback, str) and postback else None)
        msg = ApiMessage(
            sender[0][1], tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), headers=header_pairs(headers)
        )
        return Submission(key, (msg,))

    def new_message_id(self) -> str:
        return secrets.token_urlsafe(16)  # Elastic Email MessageIDs are opaque url-safe strings

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        return json_response(200, {"TransactionID": str(uuid.uuid4()), "MessageID": esp_ids[0]})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        headers = rate.retry_after() if rate is not None else None
        return json_response(status, {"Error": message}, headers)
