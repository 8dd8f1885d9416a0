"""SendPulse SMTP service API: ``POST /oauth/access_token`` then ``POST /smtp/emails`` (JSON).

Auth: OAuth 2 client credentials — ``/oauth/access_token`` takes ``{grant_type: client_credentials,
client_id, client_secret}`` and answers ``{access_token, token_type: Bearer, expires_in: 3600}``; sends
carry ``Authorization: Bearer <token>`` (401 otherwise). The fake's token encodes the client id, which is
the key the throttle counts by, and the token request itself goes through the engine like a send
(SendPulse's limit of 10 requests/s covers every API request), so it can be throttled or cut too; it
writes no esp.accepted record. Send: ``{"email": {...}}`` where ``email`` is an object (or, as the
official SDK sends it, that object serialized as a JSON string) with ``html`` (base64), ``text``,
``template {id, variables}``, ``subject``, ``from {name, email}``, ``to``/``cc``/``bcc`` ``[{name,
email}]``. Success: 200 ``{"result": true, "id": "..."}``. Errors: ``{"error_code", "message"}`` (400
for a bad request; the numeric error_code is the HTTP status, as no per-case code is published); no
rate-limit headers are published, so a 429 carries Retry-After only (the fake's). The correlation id:
the reference lists no custom-header field, so the fake reads the correlation header from an optional
``email.headers`` object (its choice, stated here), else a ``template.variables`` entry of that name or
``mailstorm_id``.
Reference: https://sendpulse.com/integrations/api/smtp and https://sendpulse.com/integrations/api
(authorization, "The request limit is 10 requests per second").
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any

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

TOKEN_PATH = "/oauth/access_token"
TOKEN_TTL_S = 3600  # sendpulse api: "expires_in": 3600 in the token answer


@register
class SendPulseApi(EspApi):
    name = "sendpulse"
    key_is_secret = False  # the client id (in a token the fake issued, or with its client_secret)
    routes = (("POST", TOKEN_PATH), ("POST", "/smtp/emails"))

    def _bad(self, message: str, status: int = 400) -> BadRequest:
        return BadRequest(self.error(status, message), message)

    async def parse(self, request: web.Request) -> Submission:
        raw = await request.read()
        data, why = load_json(raw)
        if request.path == TOKEN_PATH:
            return self._token_request(data, why)
        key = _client_of(request.headers.get("Authorization", ""))
        if key is None:
            raise self._bad("Unauthorized: a valid Bearer access token is required", status=401)
        if why is not None or not isinstance(data, dict):
            raise self._bad(f"Invalid request body: {why or 'expected a JSON object'}")
        email = data.get("email")
        if isinstance(email, str):  # the official SDK sends the email object as a JSON string
            email, why = load_json(email.encode())
            if why is not None:
                raise self._bad(f"email: {why}")
        if not isinstance(email, dict):
            raise self._bad("email is required and must be an object")
        if not email.get("html") and not email.get("text") and not email.get("template"):
            raise self._bad("Missing email body: specify a template, html or text content")
        if email.get("html") and not _is_base64(email["html"]):
            raise self._bad("email.html must be base64-encoded")
        if not isinstance(email.get("subject"), str) or not email["subject"]:
            raise self._bad("email.subject is required")
        sender = email.get("from")
        if not isinstance(sender, dict) or "@" not in str(sender.get("email", "")):
            raise self._bad("email.from must be an object with a valid email")
        rcpts: list[str] = []
        for field in ("to", "cc", "bcc"):
            lst = email.get(field) or []
            if not isinstance(lst, list):
                raise self._bad(f"email.{field} must be an array of recipients")
            for r in lst:
                addr = r.get("email") if isinstance(r, dict) else None
                if not isinstance(addr, str) or "@" not in addr:
                    raise self._bad(f"email.{field}: each recipient needs a valid email")
                rcpts.append(addr)
        if not email.get("to"):
            raise self._bad("email.to is required")
        headers = email.get("headers") if isinstance(email.get("headers"), dict) else {}
        corr, mid = self.correlation_from_headers(headers)
        template = email.get("template") if isinstance(email.get("template"), dict) else {}
        variables = template.get("variables") if isinstance(template.get("variables"), dict) else {}
        corr = corr or _str(variables.get(self.correlation_header)) or _str(variables.get("mailstorm_id"))
        msg = ApiMessage(
            str(sender["email"]),
            tuple(rcpts),
            corr,
            mid,
            len(raw),
            sha256_hex(raw),
            headers=header_pairs(headers),
        )
        return Submission(key, (msg,))

    def _token_request(self, data: Any, why: str | None) -> Submission:
        if why is not None or not isinstance(data, dict):
            raise BadRequest(_oauth_error(400, "invalid_request", why or "expected a JSON object"), "token")
        if data.get("grant_type") != "client_credentials":
            raise BadRequest(
                _oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials"), "token"
            )
        client = data.get("client_id")
        if not isinstance(client, str) or not client or not data.get("client_secret"):
            raise BadRequest(_oauth_error(401, "invalid_client", "Client authentication failed"), "token")
        # No messages: the server accepts it without a ledger record; the answer is the token.
        return Submission(client, (), extra={"token_for": client}, secret=str(data["client_secret"]))

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        client = sub.extra.get("token_for")
        if client is not None:
            tag = base64.urlsafe_b64encode(client.encode()).decode().rstrip("=")
            token = f"{tag}.{secrets.token_urlsafe(24)}"
            return json_response(
                200, {"access_token": token, "token_type": "Bearer", "expires_in": TOKEN_TTL_S}
            )
        return json_response(200, {"result": True, "id": esp_ids[0]})

    def new_message_id(self) -> str:
        return secrets.token_hex(12)

    def unauthorized(
        self, sub: Submission, status: int, message: str, code: str | int | None
    ) -> web.Response:
        if "token_for" in sub.extra:  # the token request: OAuth's own answer (RFC 6749 5.2)
            return _oauth_error(401, "invalid_client", "Client authentication failed")
        return super().unauthorized(sub, status, message, code)

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        headers = rate.retry_after() if rate is not None else None
        err = code if code is not None else status
        return json_response(status, {"error_code": err, "message": message}, headers)


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    # RFC 6749 section 5.2 error shape, with the "message" SendPulse's answers carry as well.
    return json_response(status, {"error": error, "error_description": description, "message": description})


def _client_of(header: str) -> str | None:
    """The client id encoded in a token the fake issued (see ``accepted``), else None."""
    if not header.startswith("Bearer "):
        return None
    tag = header[7:].strip().partition(".")[0]
    try:
        return base64.urlsafe_b64decode(tag + "=" * (-len(tag) % 4)).decode() or None
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
