"""Amazon SES v2 SendEmail: ``POST /v2/email/outbound-emails`` (REST-JSON, as botocore's sesv2 speaks it).

Request: ``FromEmailAddress``, ``Destination{ToAddresses,CcAddresses,BccAddresses}``, ``Content`` with
exactly one of ``Simple{Subject,Body,Headers}``, ``Raw{Data}`` (base64 MIME) or ``Template``, and
``EmailTags``. Auth: a SigV4 ``Authorization`` header; the access key id in its Credential is the API key
(the signature is not verified). Success: 200 ``{"MessageId"}``. Errors carry ``x-amzn-ErrorType`` and
``{"message"}``, which botocore turns into its modeled exceptions (``BadRequestException``,
``MessageRejected`` 400, ``TooManyRequestsException`` 429) or a ``ClientError`` with the code (500
``InternalFailure``, 503 ``ServiceUnavailable``). The correlation id: the correlation header in
``Simple.Headers``/``Template.Headers``/the raw MIME, or an ``EmailTags`` entry named after it (or
``mailstorm_id``).
Reference: https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendEmail.html and botocore's
sesv2 service model (error shapes and their HTTP status).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid
from typing import Any

from aiohttp import web

from mailstorm.fake_esp.http.api import (
    ApiMessage,
    BadRequest,
    EspApi,
    Headers,
    RateInfo,
    Submission,
    header_pairs,
    json_response,
    load_json,
    register,
    sha256_hex,
)

MAX_RECIPIENTS = 50  # SES: to + cc + bcc may not exceed 50 (profile.yaml)
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")

# The error code AWS gives for a status when a fault names none (AWS common errors).
_DEFAULT_CODES = {
    400: "BadRequestException",
    403: "UnrecognizedClientException",
    404: "NotFoundException",
    429: "TooManyRequestsException",
    500: "InternalFailure",
    502: "InternalFailure",
    503: "ServiceUnavailable",
    504: "ServiceUnavailable",
}


@register
class SesApi(EspApi):
    name = "ses"
    key_is_secret = False  # the SigV4 access key id: the fake cannot check the signature
    routes = (("POST", "/v2/email/outbound-emails"),)

    def _bad(self, message: str, code: str = "BadRequestException") -> BadRequest:
        return BadRequest(self.error(400, message, code=code), message)

    async def parse(self, request: web.Request) -> Submission:
        match = _CREDENTIAL.search(request.headers.get("Authorization", ""))
        if match is None:
            raise BadRequest(
                self.error(403, "Missing Authentication Token", code="MissingAuthenticationTokenException"),
                "Authorization: no SigV4 credential",
            )
        key = match.group(1)
        raw = await request.read()
        data, why = load_json(raw)
        if why is not None:
            raise self._bad(why, code="SerializationException")
        if not isinstance(data, dict):
            raise self._bad("The request body must be a JSON object.", code="SerializationException")
        content = data.get("Content")
        if not isinstance(content, dict):
            raise self._bad(
                "1 validation error detected: Value null at 'content' failed to satisfy constraint: "
                "Member must not be null"
            )
        kinds = [k for k in ("Simple", "Raw", "Template") if k in content]
        if len(kinds) != 1:
            raise self._bad("Content must contain exactly one of Simple, Raw or Template.")
        sender = data.get("FromEmailAddress")
        dest = data.get("Destination") or {}
        if not isinstance(dest, dict):
            raise self._bad("Destination must be an object.")
        rcpts: list[str] = []
        for kind in ("ToAddresses", "CcAddresses", "BccAddresses"):
            lst = dest.get(kind, [])
            if not isinstance(lst, list) or not all(isinstance(a, str) and "@" in a for a in lst):
                raise self._bad(f"Destination.{kind} must be a list of email addresses.")
            rcpts += lst
        corr = mid = None
        carried: Headers = ()  # the message's headers, which SES events carry in mail.headers
        size = len(raw)
        sha = sha256_hex(raw)
        if kinds == ["Raw"]:
            body = _raw_bytes(content["Raw"])
            if body is None:
                raise self._bad("Content.Raw.Data must be a base64-encoded MIME message.")
            corr, mid, mime_from, mime_rcpts, carried = self.parse_mime(body)
            sender = sender or mime_from
            rcpts = rcpts or mime_rcpts
            size, sha = len(body), sha256_hex(body)
        else:
            part = content[kinds[0]]
            if not isinstance(part, dict):
                raise self._bad(f"Content.{kinds[0]} must be an object.")
            if kinds == ["Simple"]:
                subject = part.get("Subject")
                if not isinstance(subject, dict) or not isinstance(subject.get("Data"), str):
                    raise self._bad("Content.Simple.Subject.Data is required.")
                if not isinstance(part.get("Body"), dict) or not part["Body"]:
                    raise self._bad("Content.Simple.Body is required.")
            corr, mid = self.correlation_from_headers(part.get("Headers") or [])
            carried = header_pairs(part.get("Headers"))
        if not isinstance(sender, str) or "@" not in sender:
            raise self._bad("Missing final '@domain'", code="MessageRejected")
        if not rcpts:
            raise self._bad("Destination must contain at least one recipient.")
        if len(rcpts) > MAX_RECIPIENTS:
            raise self._bad(f"Recipient count exceeds {MAX_RECIPIENTS}.", code="MessageRejected")
        tags: dict[str, list[str]] = {}  # SES events carry the send's EmailTags as {name: [value]}
        for tag in data.get("EmailTags") or []:
            if (
                isinstance(tag, dict)
                and isinstance(tag.get("Name"), str)
                and isinstance(tag.get("Value"), str)
            ):
                tags[tag["Name"]] = [tag["Value"]]
                if tag["Name"] in (self.correlation_header, "mailstorm_id"):
                    corr = corr or tag["Value"]
        echo = {"headers": [{"name": n, "value": v} for n, v in carried], "tags": tags}
        msg = ApiMessage(sender, tuple(rcpts), corr, mid, size, sha, echo, headers=carried)
        return Submission(key, (msg,))

    def new_message_id(self) -> str:
        # SES message ids look like 0100018c...-<uuid>-000000
        return f"0100{secrets.token_hex(6)}-{uuid.uuid4()}-000000"

    def accepted(self, request: web.Request, sub: Submission, esp_ids: list[str]) -> web.Response:
        return json_response(200, {"MessageId": esp_ids[0]}, {"x-amzn-RequestId": str(uuid.uuid4())})

    def error(
        self, status: int, message: str, *, code: str | int | None = None, rate: RateInfo | None = None
    ) -> web.Response:
        fallback = "InternalFailure" if status >= 500 else "BadRequestException"
        err = str(code) if code else _DEFAULT_CODES.get(status, fallback)
        headers = {"x-amzn-ErrorType": err, "x-amzn-RequestId": str(uuid.uuid4())}
        if rate is not None:
            # AWS publishes no rate-limit headers; Retry-After is the fake's addition (see the profile).
            headers |= rate.retry_after()
        return json_response(status, {"message": message}, headers)


def _raw_bytes(raw: Any) -> bytes | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("Data"), str):
        return None
    try:
        return base64.b64decode(raw["Data"], validate=True)
    except (binascii.Error, ValueError):
        return None
