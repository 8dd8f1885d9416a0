"""Twilio SendGrid v3 Mail Send: ``POST /v3/mail/send``.

Request: JSON with ``personalizations`` (each with ``to``/``cc``/``bcc`` and optional ``headers``,
``custom_args``, ``subject``), ``from``, ``subject``, ``content`` (or ``template_id``), ``headers``,
``custom_args``. Each personalization is one message. Auth: ``Authorization: Bearer <key>`` (401
otherwise). Success: 202, empty body, ``X-Message-Id``. Errors: ``{"errors": [{"message", "field",
"help"}]}``; a 429 carries ``X-RateLimit-Limit/Remaining/Reset`` (SendGrid's rate-limit headers) and
Retry-After. The correlation id is the correlation header in ``headers`` (of the personalization, else
the message) or the same key in ``custom_args``.
Reference: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send and
https://www.twilio.com/docs/sendgrid/api-reference/mail-send/errors (the messages below are theirs).
"""

from __future__ import annotations

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

MAX_PERSONALIZATIONS = 1000  # sendgrid errors page: 1000 personalizations per request
MAX_RECIPIENTS = 1000  # sendgrid errors page: 1000 total recipients (to + cc + bcc) per request


@register
class SendGridApi(EspApi):
    name = "sendgrid"
    routes = (("POST", "/v3/mail/send"),)

    def _bad(self, message: str, field: str | None) -> BadRequest:
        body = {"errors": [{"message": message, "field": field, "help": None}]}
        return BadRequest(json_response(400, body), f"{field}: {message}")

    async def parse(self, request: web.Request) -> Submission:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise BadRequest(
                self.error(401, "The provided authorization grant is invalid, expired, or revoked"),
                "Authorization: missing Bearer key",
            )
        key = auth[7:].strip()
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(f"Bad Request: {why}", None)
        if not isinstance(data, dict):
            raise self._bad("The request body must be a JSON object.", None)
        sender = data.get("from")
        if not isinstance(sender, dict) or not isinstance(sender.get("email"), str) or not sender["email"]:
            raise self._bad(
                "The from object must be provided for every email send. It is an object that requires the "
                "email parameter, but may also contain a name parameter.",
                "from",
            )
        pers = data.get("personalizations")
        if not isinstance(pers, list) or not pers:
            raise self._bad(
                "The personalizations field is required and must have at least one personalization.",
                "personalizations",
            )
        if len(pers) > MAX_PERSONALIZATIONS:
            raise self._bad(
                f"The personalization block is limited to 1000 personalizations per API request. You have "
                f"provided {len(pers)} personalizations.",
                "personalizations",
            )
        if "template_id" not in data:
            content = data.get("content")
            if (
                not isinstance(content, list)
                or not content
                or not all(
                    isinstance(c, dict) and isinstance(c.get("type"), str) and isinstance(c.get("value"), str)
                    for c in content
                )
            ):
                raise self._bad(
                    "Unless a valid template_id is provided, the content parameter is required. There must "
                    "be at least one defined content block. We typically suggest both text/plain and "
                    "text/html blocks are included, but only one block is required.",
                    "content",
                )
        top_corr, top_mid = self.correlation_from_headers(data.get("headers") or {})
        top_args = data.get("custom_args") or {}
        messages: list[ApiMessage] = []
        total = 0
        for i, p in enumerate(pers):
            if not isinstance(p, dict):
                raise self._bad("Each personalization must be an object.", f"personalizations.{i}")
            rcpts: list[str] = []
            for kind in ("to", "cc", "bcc"):
                lst = p.get(kind, [])
                if not isinstance(lst, list) or (kind == "to" and not lst):
                    raise self._bad(
                        "The to array is required for all personalization objects, and must have at least "
                        "one email object with a valid email address.",
                        f"personalizations.{i}.to",
                    )
                for j, r in enumerate(lst):
                    if not isinstance(r, dict) or "@" not in str(r.get("email", "")):
                        raise self._bad(
                            "Each email address in the personalization block should be a valid email "
                            "address.",
                            f"personalizations.{i}.{kind}.{j}.email",
                        )
                    rcpts.append(r["email"])
            total += len(rcpts)
            if "subject" not in data and "subject" not in p and "template_id" not in data:
                raise self._bad(
                    "The subject is required. You can get around this requirement if you use a template "
                    "with a subject defined or if every personalization has a subject defined.",
                    "subject",
                )
            corr, mid = self.correlation_from_headers(p.get("headers") or {})
            args = p.get("custom_args") or {}
            hdr = self.correlation_header
            corr = corr or _arg(args, hdr) or top_corr or _arg(top_args, hdr)
            # SendGrid echoes custom args (the request's, then the personalization's) and categories.
            custom = {**_dict(top_args), **_dict(args)}
            echo = {"custom_args": {str(k): str(v) for k, v in custom.items()}, "categories": _tags(data)}
            campaign = self.campaign_from_headers(p.get("headers") or {}) or self.campaign_from_headers(
                data.get("headers") or {}
            )
            messages.append(
                ApiMessage(
                    sender["email"],
                    tuple(rcpts),
                    corr,
                    mid or top_mid,
                    len(raw),
                    sha256_hex(raw),
                    echo,
                    campaign=campaign,
                    headers=header_pairs(data.get("headers"), p.get("headers")),
                )
            )
        if total > MAX_RECIPIENTS:
            raise self._bad(
                "There is a limit of 1000 total recipients (to + cc + bcc) per request.", "personalizations"
            )
        return Submission(key, tuple(messages))

    def message_ids(self, sub: Submission) -> list[str]:
        # One X-Message-Id per request; each personalization's id starts with it (SendGrid's events
        # carry sg_message_id = <X-Message-Id>.<filter and per-message suffixes>).
        first = self.new_message_id()
        return [first] + [f"{first}-{i}" for i in range(1, len(sub.messages))]

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        return web.Response(status=202, headers={"X-Message-Id": esp_ids[0]})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        headers = rate.x_ratelimit() if rate is not None else None
        return json_response(status, {"errors": [{"field": None, "message": message}]}, headers)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _tags(data: dict[str, Any]) -> list[str]:
    cats = data.get("categories")
    return [c for c in cats if isinstance(c, str)] if isinstance(cats, list) else []


def _arg(args: Any, header: str) -> str | None:
    """custom_args may carry the correlation id under the header's name or as ``mailstorm_id``."""
    if not isinstance(args, dict):
        return None
    value = args.get(header, args.get("mailstorm_id"))
    return value if isinstance(value, str) else None
