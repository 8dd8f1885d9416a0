"""Mailgun: ``POST /v3/<domain>/messages`` (form fields) and ``POST /v3/<domain>/messages.mime`` (raw MIME).

Request: multipart/form-data or urlencoded fields ``from``, ``to`` (repeatable, comma-separated allowed),
``cc``, ``bcc``, ``subject``, ``text``/``html``/``template``, ``h:<Header>``, ``v:<var>``, ``o:tag``;
``messages.mime`` takes ``to`` and a ``message`` file. Auth: HTTP Basic ``api:<KEY>`` (401 otherwise).
Success: 200 ``{"id": "<...@domain>", "message": "Queued. Thank you."}``. Errors: ``{"message"}``; a 429
carries ``X-RateLimit-*`` and Retry-After. The correlation id: ``h:<correlation header>``, or a
``v:`` variable of that name or ``v:mailstorm_id``; for MIME, the header in the message.
Reference: https://documentation.mailgun.com/docs/mailgun/api-reference/openapi-final/tag/Messages/
"""

from __future__ import annotations

import re
import secrets
import time
from email.utils import getaddresses
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiDictProxy

from mailstorm.fake_esp.http.api import (
    ApiMessage,
    BadRequest,
    EspApi,
    RateInfo,
    Submission,
    basic_credentials,
    json_response,
    register,
    sha256_hex,
)

MAX_RECIPIENTS = 1000  # profile.yaml (mg-batch)
_DOMAIN = re.compile(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


@register
class MailgunApi(EspApi):
    name = "mailgun"
    routes = (("POST", "/v3/{domain}/messages"), ("POST", "/v3/{domain}/messages.mime"))

    def _bad(self, message: str) -> BadRequest:
        return BadRequest(json_response(400, {"message": message}), message)

    async def parse(self, request: web.Request) -> Submission:
        key = _basic_key(request.headers.get("Authorization", ""))
        if key is None:
            raise BadRequest(self.error(401, "Forbidden"), "Authorization: missing Basic api:KEY")
        domain = request.match_info["domain"]
        if not _DOMAIN.match(domain):
            raise BadRequest(json_response(404, {"message": f"Domain not found: {domain}"}), "domain")
        try:
            form = await request.post()
        except Exception as exc:  # aiohttp raises several types for a broken multipart/urlencoded body
            raise self._bad(f"Invalid request body: {type(exc).__name__}: {exc}") from None
        echo = _echo(form, domain)
        if request.path.endswith(".mime"):
            return self._parse_mime(key, form, echo)
        return self._parse_fields(key, form, await request.read(), echo)

    def _addresses(self, form: MultiDictProxy, name: str) -> list[str]:
        values = [v for v in form.getall(name, []) if isinstance(v, str)]
        return [a for _, a in getaddresses(values) if a]

    def _rcpts(self, form: MultiDictProxy) -> list[str]:
        rcpts = self._addresses(form, "to") + self._addresses(form, "cc") + self._addresses(form, "bcc")
        if not rcpts:
            raise self._bad("'to' parameter is missing")
        if not all("@" in a for a in rcpts):
            raise self._bad("'to' parameter is not a valid address. please check documentation")
        if len(rcpts) > MAX_RECIPIENTS:
            raise self._bad(f"Too many recipients: at most {MAX_RECIPIENTS} allowed")
        return rcpts

    def _parse_fields(self, key: str, form: MultiDictProxy, raw: bytes, echo: dict[str, Any]) -> Submission:
        sender = self._addresses(form, "from")
        if not sender:
            raise self._bad("'from' parameter is missing")
        rcpts = self._rcpts(form)
        if not any(form.get(f) for f in ("text", "html", "template", "amp-html")):
            raise self._bad("Need at least one of 'text', 'html' or 'template' parameters specified")
        hdr = self.correlation_header
        corr = _str(form.get(f"h:{hdr}")) or _str(form.get(f"v:{hdr}")) or _str(form.get("v:mailstorm_id"))
        mid = _str(form.get("h:Message-Id")) or _str(form.get("h:Message-ID"))
        # Mailgun carries each custom header as an ``h:<Name>`` form field.
        carried = tuple((k[2:], v) for k, v in form.items() if k.startswith("h:") and isinstance(v, str))
        msg = ApiMessage(sender[0], tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), echo, headers=carried)
        return Submission(key, (msg,))

    def _parse_mime(self, key: str, form: MultiDictProxy, echo: dict[str, Any]) -> Submission:
        rcpts = self._rcpts(form)
        part = form.get("message")
        if part is None or isinstance(part, str):
            raise self._bad("'message' parameter is missing")
        body = part.file.read()
        corr, mid, sender, _, carried = self.parse_mime(body)
        if sender is None:
            raise self._bad("'from' header is missing in the MIME message")
        msg = ApiMessage(sender, tuple(rcpts), corr, mid, len(body), sha256_hex(body), echo, headers=carried)
        return Submission(key, (msg,))

    def new_message_id(self) -> str:
        return f"{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}"

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        domain = request.match_info["domain"]
        return json_response(200, {"id": f"<{esp_ids[0]}@{domain}>", "message": "Queued. Thank you."})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        headers = rate.x_ratelimit() if rate is not None else None
        return json_response(status, {"message": message}, headers)


def _basic_key(header: str) -> str | None:
    creds = basic_credentials(header)
    return creds[1] if creds and creds[0] == "api" and creds[1] else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _echo(form: MultiDictProxy, domain: str) -> dict[str, Any]:
    """What Mailgun echoes in events: user-variables (``h:X-Mailgun-Variables`` JSON, then each ``v:``
    field), tags (``o:tag``), and the sending domain (the message id the send answers is ``<id@domain>``)."""
    variables: dict[str, Any] = {}
    raw = form.get("h:X-Mailgun-Variables")
    if isinstance(raw, str):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            variables |= parsed
    variables |= {k[2:]: v for k, v in form.items() if k.startswith("v:") and isinstance(v, str)}
    tags = [t for t in form.getall("o:tag", []) if isinstance(t, str)]
    return {"user-variables": variables, "tags": tags, "domain": domain}
