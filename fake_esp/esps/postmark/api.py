"""Postmark: ``POST /email`` and ``POST /email/batch`` (JSON).

Request: ``From``, ``To`` (comma-separated, with ``Cc``/``Bcc`` at most 50), ``Subject``,
``TextBody``/``HtmlBody``, ``Headers [{Name, Value}]``, ``Metadata {k: v}``, ``Tag``; the batch endpoint
takes a JSON array of up to 500 of those. Auth: ``X-Postmark-Server-Token`` (401, ErrorCode 10,
otherwise). Success: 200 ``{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}`` (an array for a
batch). Errors: ``{"ErrorCode", "Message"}``: 422 for a request Postmark cannot process (ErrorCode 402
invalid JSON, 300 invalid email request) — Postmark's own shape for a bad request, where other ESPs use
400 — and 429/500/503 from faults. A send whose every recipient Postmark has deactivated (a hard bounce,
a spam complaint or an unsubscribe: its suppression list) is refused: 422 ErrorCode 406 (in a batch, that
message's answer is the 406); with some inactive, it goes to the others and its ``Message`` names the
inactive ones (mailstorm.fake_esp.http.suppressed). The correlation id: the correlation header in
``Headers``, or a ``Metadata`` key of that name or ``mailstorm_id``. Reference:
https://postmarkapp.com/developer/api/email-api and
https://postmarkapp.com/developer/api/overview#error-codes
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

import orjson
from aiohttp import web

from mailstorm.fake_esp.http.api import (
    SUPPRESSED,
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

MAX_RECIPIENTS = 50  # pm-300 in profile.yaml
INACTIVE_RECIPIENT = 406  # pm-error-codes: "Inactive recipient"
MAX_BATCH = 500  # https://postmarkapp.com/developer/user-guide/send-email-with-api/batch-emails
# ErrorCode for an HTTP status when a fault names none (pm-error-codes; 500 has no code of its own).
_DEFAULT_CODES = {401: 10, 422: 300, 429: 429, 503: 100}


@register
class PostmarkApi(EspApi):
    name = "postmark"
    refuses_suppressed = True
    routes = (("POST", "/email"), ("POST", "/email/batch"))

    def _bad(self, code: int, message: str) -> BadRequest:
        return BadRequest(json_response(422, {"ErrorCode": code, "Message": message}), message)

    async def parse(self, request: web.Request) -> Submission:
        key = request.headers.get("X-Postmark-Server-Token", "").strip()
        if not key:
            raise BadRequest(
                self.error(
                    401,
                    "No Account or Server API tokens were supplied in the HTTP headers. Please add a header "
                    "for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
                    code=10,
                ),
                "X-Postmark-Server-Token: missing",
            )
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(402, f"Invalid JSON: {why}")
        batch = request.path.endswith("/batch")
        if batch:
            if not isinstance(data, list) or not data:
                raise self._bad(403, "Incompatible JSON: the batch endpoint takes a non-empty JSON array")
            if len(data) > MAX_BATCH:
                raise self._bad(410, f"Too many batch messages: at most {MAX_BATCH} per call")
            items = data
        else:
            if not isinstance(data, dict):
                raise self._bad(403, "Incompatible JSON: the email endpoint takes a JSON object")
            items = [data]
        messages = tuple(
            self._message(item, orjson.dumps(item) if batch else raw, f"[{i}]." if batch else "")
            for i, item in enumerate(items)
        )
        return Submission(key, messages, extra={"batch": batch})

    def _message(self, item: Any, raw: bytes, where: str) -> ApiMessage:
        if not isinstance(item, dict):
            raise self._bad(403, f"Incompatible JSON: {where or 'the message'} must be an object")
        sender = getaddresses([item["From"]]) if isinstance(item.get("From"), str) else []
        if not sender or "@" not in sender[0][1]:
            raise self._bad(300, f"Invalid email request: {where}From is required and must be an address")
        rcpts = [
            a
            for field in ("To", "Cc", "Bcc")
            if isinstance(item.get(field), str)
            for _, a in getaddresses([item[field]])
            if a
        ]
        if not rcpts:
            raise self._bad(300, f"Invalid email request: {where}To is required")
        if not all("@" in a for a in rcpts):
            raise self._bad(300, f"Invalid email request: {where}To contains an illegal email address")
        if len(rcpts) > MAX_RECIPIENTS:
            raise self._bad(300, f"Invalid email request: Maximum of {MAX_RECIPIENTS} recipients allowed")
        if not item.get("TextBody") and not item.get("HtmlBody") and not item.get("TemplateId"):
            raise self._bad(300, f"Invalid email request: {where}Provide either TextBody or HtmlBody or both")
        corr, mid = self.correlation_from_headers(item.get("Headers") or [])
        meta = item.get("Metadata") if isinstance(item.get("Metadata"), dict) else {}
        corr = corr or _str(meta.get(self.correlation_header)) or _str(meta.get("mailstorm_id"))
        tag = item.get("Tag") if isinstance(item.get("Tag"), str) else ""
        echo = {"Metadata": meta, "Tag": tag}  # Postmark echoes both in every event
        carried = header_pairs(item.get("Headers"))
        return ApiMessage(
            sender[0][1], tuple(rcpts), corr, mid, len(raw), sha256_hex(raw), echo, headers=carried
        )

    def new_message_id(self) -> str:
        return str(uuid.uuid4())

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        inactive = sub.extra.get(SUPPRESSED) or [{} for _ in sub.messages]
        answers: list[dict[str, Any]] = []
        for m, mid, gone in zip(sub.messages, esp_ids, inactive, strict=True):
            if not m.rcpts:  # every recipient inactive: this message of the batch is not sent
                answers.append({"ErrorCode": INACTIVE_RECIPIENT, "Message": _all_inactive(list(gone))})
                continue
            text = "OK"
            if gone:
                text = (
                    f"Message OK, but will not deliver to these inactive addresses: {', '.join(gone)}. "
                    "Inactive recipients are ones that have generated a hard bounce or a spam complaint."
                )
            answers.append({"To": ", ".join([*m.rcpts, *gone]), "SubmittedAt": now, "MessageID": mid,
                            "ErrorCode": 0, "Message": text})  # fmt: skip
        return json_response(200, answers if sub.extra.get("batch") else answers[0])

    def suppressed(self, sub: Submission, why: dict[str, str]) -> web.Response:
        answer = {"ErrorCode": INACTIVE_RECIPIENT, "Message": _all_inactive(list(why))}
        return json_response(200, [answer]) if sub.extra.get("batch") else json_response(422, answer)

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        # postmarker reads ErrorCode from every error body, so every error has one.
        err = code if isinstance(code, int) else _DEFAULT_CODES.get(status, status)
        headers = rate.retry_after() if rate is not None else None
        return json_response(status, {"ErrorCode": err, "Message": message}, headers)


def _all_inactive(rcpts: list[str]) -> str:
    """Postmark's ErrorCode 406 message (anymail reads the addresses out of it)."""
    return (
        "You tried to send to a recipient that has been marked as inactive.\n"
        f"Found inactive addresses: {', '.join(r.lower() for r in rcpts)}.\n"
        "Inactive recipients are ones that have generated a hard bounce, a spam complaint, or a manual "
        "suppression."
    )


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
