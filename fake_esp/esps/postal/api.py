"""Postal: ``POST /api/v1/send/message`` and ``POST /api/v1/send/raw`` (its legacy v1 API).

Request (JSON, or form-encoded with the JSON in a ``params`` field): /send/message takes ``to``, ``cc``,
``bcc`` (arrays of at most 50 each), ``from``, ``sender``, ``subject``, ``plain_body``, ``html_body``,
``tag``, ``headers {name: value}``; /send/raw takes ``rcpt_to`` (array), ``mail_from`` and ``data`` (the
MIME message, base64). Auth: ``X-Server-API-Key``. Postal answers every request HTTP 200 and puts the
outcome in the body: ``{"status": "success" | "error" | "parameter-error", "time", "flags", "data"}``;
success data is ``{message_id, messages: {rcpt: {id, token}}}`` (one Postal message per recipient:
consecutive ids, the first the ledger's esp_id), errors ``{code, message}`` (AccessDenied without a key,
InvalidServerAPIKey for an unknown one, NoRecipients, NoContent, TooManyToAddresses, FromAddressMissing)
and parameter errors ``{message}``. A body Rails cannot parse as JSON is Rails' 400. Throttling, outages
and size limits are not Postal's: a fault's 429/5xx/413 is what the proxy in front of it answers, with
Postal's error body. The correlation id: the correlation header in ``headers`` (or the raw MIME's).
Reference: https://github.com/postalserver/postal app/controllers/legacy_api/{base,send}_controller.rb
and https://docs.postalserver.io/developer/api
"""

from __future__ import annotations

import base64
import binascii
import secrets
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qs

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

MAX_ADDRESSES = 50  # postal-send: "maximum 50" To, CC and BCC addresses each
_ERRORS = {  # postal-send: ERROR_MESSAGES
    "NoRecipients": "There are no recipients defined to receive this message",
    "NoContent": "There is no content defined for this e-mail",
    "TooManyToAddresses": "The maximum number of To addresses has been reached (maximum 50)",
    "TooManyCCAddresses": "The maximum number of CC addresses has been reached (maximum 50)",
    "TooManyBCCAddresses": "The maximum number of BCC addresses has been reached (maximum 50)",
    "FromAddressMissing": "The From address is missing and is required",
}


def _envelope(status: str, data: dict[str, Any], http: int = 200, headers: dict[str, str] | None = None):
    # ``time`` is Postal's handling time in seconds; the fake's own is negligible.
    body = {"status": status, "time": 0.001, "flags": {}, "data": data}
    return json_response(http, body, headers)


@register
class PostalApi(EspApi):
    name = "postal"
    routes = (("POST", "/api/v1/send/message"), ("POST", "/api/v1/send/raw"))

    def _error(self, code: str, message: str | None = None) -> BadRequest:
        text = message or _ERRORS.get(code, code)
        return BadRequest(_envelope("error", {"message": text, "code": code}), f"{code}: {text}")

    def _parameter_error(self, message: str) -> BadRequest:
        return BadRequest(_envelope("parameter-error", {"message": message}), message)

    async def parse(self, request: web.Request) -> Submission:
        key = request.headers.get("X-Server-API-Key", "").strip()
        if not key:
            raise self._error("AccessDenied", "Must be authenticated as a server.")
        raw = await request.read()
        params = self._params(request, raw)
        message = self._raw(params, raw) if request.path.endswith("/raw") else self._message(params, raw)
        return Submission(key, (message,))

    def _params(self, request: web.Request, raw: bytes) -> dict[str, Any]:
        # Postal (Moonrope) reads a JSON body, or the JSON in the ``params`` field of a form body.
        if request.content_type == "application/json":
            data, why = load_json(raw) if raw.strip() else ({}, None)
            if why is not None:
                # Rails refuses a JSON body it cannot parse before Postal sees it.
                raise BadRequest(json_response(400, {"status": 400, "error": "Bad Request"}), why)
            return data if isinstance(data, dict) else {}
        try:
            form = parse_qs(raw.decode("utf-8"))
            data = orjson.loads(form["params"][0]) if "params" in form else {}
        except (UnicodeDecodeError, orjson.JSONDecodeError, ValueError):
            data = {}
        return data if isinstance(data, dict) else {}

    def _message(self, params: dict[str, Any], raw: bytes) -> ApiMessage:
        rcpts: list[str] = []
        for field, code in (
            ("to", "TooManyToAddresses"),
            ("cc", "TooManyCCAddresses"),
            ("bcc", "TooManyBCCAddresses"),
        ):
            found = _addresses(params.get(field))
            if len(found) > MAX_ADDRESSES:
                raise self._error(code)
            rcpts += found
        if not rcpts:
            raise self._error("NoRecipients")
        sender = _addresses(params.get("from"))
        if not sender:
            raise self._error("FromAddressMissing")
        if not any(isinstance(params.get(k), str) and params[k] for k in ("plain_body", "html_body")):
            raise self._error("NoContent")
        corr, mid = self.correlation_from_headers(params.get("headers") or {})
        carried = header_pairs(params.get("headers"))
        return ApiMessage(sender[0], tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), headers=carried)

    def _raw(self, params: dict[str, Any], raw: bytes) -> ApiMessage:
        rcpts = params.get("rcpt_to")
        if not isinstance(rcpts, list):
            raise self._parameter_error("`rcpt_to` parameter is required but is missing")
        if not isinstance(params.get("mail_from"), str) or not params["mail_from"].strip():
            raise self._parameter_error("`mail_from` parameter is required but is missing")
        if not isinstance(params.get("data"), str) or not params["data"].strip():
            raise self._parameter_error("`data` parameter is required but is missing")
        try:
            mime = base64.b64decode(params["data"])
        except (binascii.Error, ValueError):
            mime = b""
        corr, mid, from_header, _, carried = self.parse_mime(mime)
        if from_header is None:
            # Postal looks for an authenticated domain in the From/Sender headers; none found, none sent.
            raise self._error(
                "UnauthenticatedFromAddress",
                "The From address is not authorised to send mail from this server",
            )
        addresses = list(dict.fromkeys(r for r in rcpts if isinstance(r, str) and "@" in r))
        if not addresses:
            raise self._error("NoRecipients")
        size, sha = len(mime), sha256_hex(mime)
        return ApiMessage(params["mail_from"], tuple(addresses), corr, mid, size, sha, headers=carried)

    def new_message_id(self) -> str:
        return str(secrets.randbelow(10**8) + 1)  # Postal's message ids are integers

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        (m,) = sub.messages
        first = int(esp_ids[0])
        messages = {r: {"id": first + i, "token": secrets.token_urlsafe(9)} for i, r in enumerate(m.rcpts)}
        return _envelope(
            "success", {"message_id": f"{secrets.token_hex(16)}@rp.postal.example", "messages": messages}
        )

    def unauthorized(
        self, sub: Submission, status: int, message: str, code: str | int | None
    ) -> web.Response:
        # Postal answers an unknown key in its 200 envelope, naming the key it refused.
        return _envelope(
            "error",
            {"message": "The API token provided in X-Server-API-Key was not valid.", "token": sub.key,
             "code": "InvalidServerAPIKey"},
        )  # fmt: skip

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        data = {"message": message, "code": str(code) if code is not None else str(status)}
        return _envelope("error", data, status, rate.retry_after() if rate else None)


def _addresses(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return [a for _, a in getaddresses([v for v in items if isinstance(v, str)]) if "@" in a]
