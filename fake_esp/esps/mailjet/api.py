"""Mailjet Send API v3.1: ``POST /v3.1/send`` (JSON).

Request: ``{"Messages": [...], "SandboxMode": bool}``, at most 50 messages; each with ``From {Email,
Name}``, ``To``/``Cc``/``Bcc`` ``[{Email, Name}]`` (at most 50 recipients in all), ``Subject``,
``TextPart``/``HTMLPart`` or ``TemplateID``, ``Headers {name: value}``, ``CustomID``, ``EventPayload``.
Each message is one ESP message. Auth: HTTP Basic ``<API key>:<secret key>`` (the API key is the key the
throttle counts by); 401 otherwise. Success: 200 ``{"Messages": [{"Status": "success", "CustomID", "To":
[{Email, MessageUUID, MessageID, MessageHref}], "Cc", "Bcc"}]}``. Errors: a global error ``{ErrorIdentifier,
ErrorCode, StatusCode, ErrorMessage}`` (mj-0002 for broken JSON), or 400 with a per-message ``{"Status":
"error", "Errors": [{ErrorIdentifier, ErrorCode, StatusCode, ErrorMessage, ErrorRelatedTo}]}`` (mj-0003
missing property, mj-0004 type mismatch, mj-0013 invalid address, send-0003 no content; the codes for
the per-call limits, send-0010 and send-0011, are the fake's: no published code was found). Mailjet
publishes no rate-limit headers: a 429 carries the global error shape and Retry-After (the fake's). The
correlation id: the correlation header in ``Headers``, else ``CustomID`` (echoed back in Mailjet's events).
``Globals`` holds properties every message gets unless it sets its own (``Headers`` merged): how
django-anymail sends, with From in Globals.
Reference: https://dev.mailjet.com/email/guides/send-api-v31/ and
https://dev.mailjet.com/docs/email-api/email_api_overview/status_codes
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import orjson
from aiohttp import web

from mailstorm.fake_esp.http.api import (
    ApiMessage,
    BadRequest,
    EspApi,
    RateInfo,
    Submission,
    basic_credentials,
    header_pairs,
    json_response,
    load_json,
    register,
    sha256_hex,
)

MAX_MESSAGES = 50  # mailjet send-api-v31: "up to 50 messages" per call (profile.yaml)
MAX_RECIPIENTS = 50  # mailjet send-api-v31: 50 recipients (To + Cc + Bcc) per message


@register
class MailjetApi(EspApi):
    name = "mailjet"
    key_is_secret = False  # Basic <API key>:<secret key>: the secret is checked apart
    routes = (("POST", "/v3.1/send"),)

    def _global(self, status: int, code: str | None, message: str) -> dict[str, Any]:
        body: dict[str, Any] = {"ErrorIdentifier": str(uuid.uuid4())}
        if code is not None:
            body["ErrorCode"] = code
        return body | {"StatusCode": status, "ErrorMessage": message}

    def _bad_message(self, code: str, message: str, related: list[str]) -> BadRequest:
        err = self._global(400, code, message) | {"ErrorRelatedTo": related}
        body = {"Messages": [{"Status": "error", "Errors": [err]}]}
        return BadRequest(json_response(400, body), f"{code}: {message} ({', '.join(related)})")

    async def parse(self, request: web.Request) -> Submission:
        creds = basic_credentials(request.headers.get("Authorization", ""))
        key, secret = creds if creds and creds[0] and creds[1] else (None, None)
        if key is None:
            raise BadRequest(
                self.error(401, "API key authentication/authorization failure. You may be unauthorized to "
                           "access the API or your API key may be expired. Visit API keys management section "
                           "to check your keys."),
                "Authorization: missing Basic key:secret",
            )  # fmt: skip
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None or not isinstance(data, dict):
            body = self._global(
                400, "mj-0002", "Malformed JSON, please review the syntax and properties types."
            )
            raise BadRequest(json_response(400, body), why or "the body is not a JSON object")
        msgs = data.get("Messages")
        if not isinstance(msgs, list) or not msgs:
            raise self._bad_message("mj-0003", "Missing mandatory property.", ["Messages"])
        if len(msgs) > MAX_MESSAGES:
            raise self._bad_message(
                "send-0011", f"Too many messages: at most {MAX_MESSAGES} per call.", ["Messages"]
            )
        common = data.get("Globals")
        if isinstance(common, dict) and common:
            msgs = [_with_globals(common, m) for m in msgs]
        whole = len(msgs) == 1
        return Submission(
            key,
            tuple(self._message(m, i, raw if whole else orjson.dumps(m)) for i, m in enumerate(msgs)),
            extra={"custom_ids": [m.get("CustomID", "") if isinstance(m, dict) else "" for m in msgs]},
            secret=secret,
        )

    def _message(self, m: Any, i: int, raw: bytes) -> ApiMessage:
        where = f"Messages[{i}]"
        if not isinstance(m, dict):
            raise self._bad_message("mj-0004", 'Type mismatch. Expected type "object".', [where])
        sender = m.get("From")
        if not isinstance(sender, dict) or not isinstance(sender.get("Email"), str):
            raise self._bad_message("mj-0003", "Missing mandatory property.", ["From"])
        if "@" not in sender["Email"]:
            raise self._bad_message(
                "mj-0013", f'"{sender["Email"]}" is an invalid email address.', ["From.Email"]
            )
        rcpts: list[str] = []
        for field in ("To", "Cc", "Bcc"):
            lst = m.get(field, [])
            if not isinstance(lst, list):
                raise self._bad_message("mj-0004", 'Type mismatch. Expected type "array of emails".', [field])
            for j, r in enumerate(lst):
                email = r.get("Email") if isinstance(r, dict) else None
                if not isinstance(email, str) or "@" not in email:
                    raise self._bad_message(
                        "mj-0013", f'"{email}" is an invalid email address.', [f"{field}[{j}].Email"]
                    )
                rcpts.append(email)
        if not m.get("To"):
            raise self._bad_message("mj-0003", "Missing mandatory property.", ["To"])
        if len(rcpts) > MAX_RECIPIENTS:
            raise self._bad_message(
                "send-0010", f"Too many recipients: at most {MAX_RECIPIENTS} (To + Cc + Bcc).", ["To"]
            )
        if not any(isinstance(m.get(f), str) and m[f] for f in ("TextPart", "HTMLPart")) and not m.get(
            "TemplateID"
        ):
            raise self._bad_message(
                "send-0003",
                'At least "HTMLPart", "TextPart" or "TemplateID" must be provided.',
                ["HTMLPart", "TextPart", "TemplateID"],
            )
        headers = m.get("Headers") if isinstance(m.get("Headers"), dict) else {}
        corr, mid = self.correlation_from_headers(headers)
        custom = m.get("CustomID")
        corr = corr or (custom if isinstance(custom, str) and custom else None)
        # Mailjet echoes CustomID, EventPayload (as Payload) and CustomCampaign in its events.
        echo = {k: m[k] for k in ("CustomID", "EventPayload", "CustomCampaign") if isinstance(m.get(k), str)}
        carried = header_pairs(headers)
        return ApiMessage(
            sender["Email"], tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), echo, headers=carried
        )

    def new_message_id(self) -> str:
        # Mailjet MessageIDs are 64-bit integers (e.g. 288230376160624642); the fake draws 18 digits.
        return str(10**17 + secrets.randbelow(9 * 10**17))

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        answers = []
        for m, mid, custom in zip(sub.messages, esp_ids, sub.extra["custom_ids"], strict=True):
            to = [
                {
                    "Email": r,
                    "MessageUUID": str(uuid.uuid4()),
                    "MessageID": int(mid),
                    "MessageHref": f"https://api.mailjet.com/v3/REST/message/{mid}",
                }
                for r in m.rcpts
            ]
            answers.append({"Status": "success", "CustomID": custom or "", "To": to, "Cc": [], "Bcc": []})
        return json_response(200, {"Messages": answers})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        headers = rate.retry_after() if rate is not None else None
        return json_response(
            status, self._global(status, None if code is None else str(code), message), headers
        )


def _with_globals(common: dict[str, Any], message: Any) -> Any:
    """A message with the ``Globals`` it does not set itself; Headers and Variables are merged key by key
    (the message's own keys win), as Mailjet does."""
    if not isinstance(message, dict):
        return message  # the message check names the type mismatch
    merged = {**common, **message}
    for field in ("Headers", "Variables"):
        if isinstance(common.get(field), dict) and isinstance(message.get(field), dict):
            merged[field] = {**common[field], **message[field]}
    return merged
