"""SparkPost: ``POST /api/v1/transmissions`` (JSON).

Request: ``recipients [{address: {email, name, header_to} | "email", metadata}]``, ``content {from:
"addr" | {email, name}, subject, text, html, headers {}}`` (or ``content.email_rfc822``, a whole MIME
message, or ``content.template_id``), ``metadata {}``, ``campaign_id``, ``options``. One transmission is
one message to its recipients. Auth: ``Authorization: <API key>`` (or Basic with the key as user), 401
otherwise. Success: 200 ``{"results": {"total_rejected_recipients": 0, "total_accepted_recipients": n,
"id": "<transmission id>"}}``. Errors: ``{"errors": [{"message", "description", "code"}]}``: 400 code
1300 for a body that is not JSON, 422 code 1400 for a required field missing and 1200 for an invalid
one, 429 from throttling. The correlation id: the correlation header in ``content.headers`` (or the raw
MIME's), else a ``metadata`` key of that name or ``mailstorm_id`` (transmission or first recipient).
Reference: https://developers.sparkpost.com/api/transmissions/ and
https://developers.sparkpost.com/api/#header-errors (the codes and messages below are theirs).
"""

from __future__ import annotations

import secrets
from email.utils import getaddresses
from typing import Any

from aiohttp import web

from mailstorm.fake_esp.http.api import (
    ApiMessage,
    BadRequest,
    EspApi,
    Headers,
    RateInfo,
    Submission,
    basic_credentials,
    header_pairs,
    json_response,
    load_json,
    register,
    sha256_hex,
)

# SparkPost error codes (sp-errors): 1300 invalid data format/type, 1400 required field is missing,
# 1200 invalid parameter value. An error SparkPost publishes no code for (401, 429, 5xx) has none.


@register
class SparkPostApi(EspApi):
    name = "sparkpost"
    # anymail posts to "transmissions/", the SDK to "transmissions": SparkPost answers both.
    routes = (("POST", "/api/v1/transmissions"), ("POST", "/api/v1/transmissions/"))

    def _bad(self, status: int, code: str, message: str, description: str) -> BadRequest:
        body = {"errors": [{"message": message, "description": description, "code": code}]}
        return BadRequest(json_response(status, body), f"{message}: {description}")

    def _missing(self, description: str) -> BadRequest:
        return self._bad(422, "1400", "required field is missing", description)

    def _invalid(self, description: str) -> BadRequest:
        return self._bad(422, "1200", "invalid parameter value", description)

    async def parse(self, request: web.Request) -> Submission:
        auth = request.headers.get("Authorization", "").strip()
        basic = basic_credentials(auth)
        key = basic[0] if basic is not None else auth
        if not key:
            raise BadRequest(self.error(401, "Unauthorized."), "Authorization: no API key")
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(
                400, "1300", "invalid data format/type", f"Problems parsing request as json: {why}"
            )
        if not isinstance(data, dict):
            raise self._bad(400, "1300", "invalid data format/type", "The request body must be a JSON object")
        content = data.get("content")
        if not isinstance(content, dict):
            raise self._missing("content object is required")
        rcpts = self._recipients(data.get("recipients"))
        corr = mid = sender = None
        carried: Headers = ()
        if isinstance(content.get("email_rfc822"), str):
            mime = content["email_rfc822"].encode("utf-8", "replace")
            corr, mid, sender, _, carried = self.parse_mime(mime)
        elif isinstance(content.get("template_id"), str):
            sender = "template@sparkpost.invalid"  # the stored template names the sender
        else:
            sender = _sender(content.get("from"))
            if not any(isinstance(content.get(k), str) for k in ("text", "html")):
                raise self._missing("At least one of text or html needs to exist in content")
            corr, mid = self.correlation_from_headers(content.get("headers") or {})
            carried = header_pairs(content.get("headers"))
        if not sender:
            raise self._missing("content.from is required")
        if corr is None:
            corr = _meta_id(data.get("metadata"), self.correlation_header) or _meta_id(
                _first_meta(data.get("recipients")), self.correlation_header
            )
        msg = ApiMessage(sender, tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), headers=carried)
        return Submission(key, (msg,))

    def _recipients(self, value: Any) -> list[str]:
        if isinstance(value, dict) and "list_id" in value:
            raise self._invalid("Stored recipient lists are not served by the fake: list recipients inline")
        if not isinstance(value, list) or not value:
            raise self._missing("recipients or list_id required")
        out = []
        for i, r in enumerate(value):
            addr = r.get("address") if isinstance(r, dict) else None
            email = addr.get("email") if isinstance(addr, dict) else addr
            if not isinstance(email, str) or "@" not in email:
                raise self._invalid(f"recipients[{i}].address.email is not a valid email address")
            out.append(email)
        return out

    def new_message_id(self) -> str:
        return str(secrets.randbelow(9 * 10**16) + 10**16)  # a 17-digit transmission id, as SparkPost's

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        (m,) = sub.messages
        results = {
            "total_rejected_recipients": 0,
            "total_accepted_recipients": len(m.rcpts),
            "id": esp_ids[0],
        }
        return json_response(200, {"results": results})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        err = {"message": message} if code is None else {"message": message, "code": str(code)}
        return json_response(status, {"errors": [err]}, rate.retry_after() if rate else None)


def _sender(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("email")
    if not isinstance(value, str):
        return None
    found = getaddresses([value])
    return found[0][1] if found and "@" in found[0][1] else None


def _first_meta(recipients: Any) -> Any:
    return (
        recipients[0].get("metadata")
        if isinstance(recipients, list) and recipients and isinstance(recipients[0], dict)
        else None
    )


def _meta_id(meta: Any, header: str) -> str | None:
    if not isinstance(meta, dict):
        return None
    value = meta.get(header) or meta.get("mailstorm_id")
    return value if isinstance(value, str) and value else None
