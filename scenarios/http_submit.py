"""Submitting one message over HTTP: to the SUT's own send endpoint, or straight to an ESP-shaped API.

``HttpSubmitter`` posts each message as one request on a kept-alive ``requests`` session (reopened every
``msgs_per_connection`` requests, like the SMTP user). The body comes from a Jinja2 template (``custom``)
or from the request shape of a real ESP API (SendGrid v3, SES v2 raw, Mailgun, Postmark), each of which
carries the correlation id the way that API lets a sender attach a header. Any 2xx is an acceptance.

requests is blocking socket code that gevent makes cooperative inside Locust; no gevent/locust here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2
import requests

from mailstorm.ledger import CORRELATION_HEADER
from mailstorm.scenarios.messages import Message
from mailstorm.scenarios.model import HttpOptions
from mailstorm.scenarios.submit import DONE, Result

_TEXT_LIMIT = 200  # of a reply body kept in the ledger


def _sendgrid(m: Message, o: HttpOptions) -> tuple[str, dict[str, str], Any]:
    content = [{"type": "text/plain", "value": m.text}]
    if m.html:
        content.append({"type": "text/html", "value": m.html})
    body = {
        "personalizations": [{"to": [{"email": r} for r in m.recipients]}],
        "from": {"email": m.sender},
        "subject": m.subject,
        "content": content,
        "headers": {CORRELATION_HEADER: m.id, "Message-ID": m.message_id},
    }
    return "/v3/mail/send", {"Authorization": f"Bearer {o.api_key}"}, body


def _ses(m: Message, o: HttpOptions) -> tuple[str, dict[str, str], Any]:
    # Raw content keeps every header (the correlation id included) exactly as the SMTP path sends it.
    body = {
        "FromEmailAddress": m.sender,
        "Destination": {"ToAddresses": list(m.recipients)},
        "Content": {"Raw": {"Data": m.raw_b64}},
    }
    auth = f"AWS4-HMAC-SHA256 Credential={o.api_key}/20240101/us-east-1/ses/aws4_request"
    return "/v2/email/outbound-emails", {"Authorization": auth}, body


def _postmark(m: Message, o: HttpOptions) -> tuple[str, dict[str, str], Any]:
    body = {
        "From": m.sender,
        "To": ", ".join(m.recipients),
        "Subject": m.subject,
        "TextBody": m.text,
        "Headers": [
            {"Name": CORRELATION_HEADER, "Value": m.id},
            {"Name": "Message-ID", "Value": m.message_id},
        ],
        "MessageStream": "outbound",
    }
    if m.html:
        body["HtmlBody"] = m.html
    return "/email", {"X-Postmark-Server-Token": o.api_key, "Accept": "application/json"}, body


def _mailgun(m: Message, o: HttpOptions) -> tuple[str, dict[str, str], Any]:
    form = [("from", m.sender), *(("to", r) for r in m.recipients), ("subject", m.subject), ("text", m.text)]
    if m.html:
        form.append(("html", m.html))
    form += [(f"h:{CORRELATION_HEADER}", m.id), ("h:Message-Id", m.message_id)]
    return f"/v3/{o.domain}/messages", {}, form


PRESETS: dict[str, Callable[[Message, HttpOptions], tuple[str, dict[str, str], Any]]] = {
    "sendgrid": _sendgrid,
    "ses": _ses,
    "postmark": _postmark,
    "mailgun": _mailgun,
}


def template_variables(m: Message) -> dict[str, Any]:
    """What a custom body template can use (the names HttpOptions.TEMPLATE_VARIABLES lists)."""
    return {
        "id": m.id,
        "message_id": m.message_id,
        "sender": m.sender,
        "recipients": list(m.recipients),
        "subject": m.subject,
        "text": m.text,
        "html": m.html,
        "raw": m.raw.decode("ascii", "replace"),
        "raw_b64": m.raw_b64,
    }


class HttpSubmitter:
    """Posts messages to ``base_url`` on one kept-alive session, renewed every ``msgs_per_connection``."""

    def __init__(
        self, base_url: str, opts: HttpOptions, *, msgs_per_connection: int, timeout_s: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.target = self.base_url
        self._opts = opts
        self._per_conn = msgs_per_connection
        self._timeout = timeout_s
        self._session: requests.Session | None = None
        self._sent_on_conn = 0
        self.connections = 0
        env = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
        self._template = env.from_string(opts.body_template) if opts.body_template is not None else None

    def _request(self, m: Message) -> tuple[str, dict[str, str], dict[str, Any]]:
        o = self._opts
        headers = {CORRELATION_HEADER: m.id}
        if o.api != "custom":
            path, api_headers, body = PRESETS[o.api](m, o)
            headers.update(api_headers)
            headers.update(o.headers)
            kwargs: dict[str, Any] = {"data": body, "auth": ("api", o.api_key)} if o.api == "mailgun" else {}
            return path, headers, kwargs or {"json": body}
        assert self._template is not None  # LoadSpec guarantees a template for api: custom
        rendered = self._template.render(template_variables(m))
        headers.update({"Content-Type": o.content_type, **o.headers})
        return o.path, headers, {"data": rendered.encode("utf-8")}

    def submit(self, m: Message) -> Result:
        """Send one request; never raises for an HTTP or socket error."""
        if self._session is not None and self._sent_on_conn >= self._per_conn:
            self.close()
        if self._session is None:
            self._session, self._sent_on_conn = requests.Session(), 0
            self.connections += 1
        self._sent_on_conn += 1
        path, headers, kwargs = self._request(m)
        try:
            resp = self._session.request(
                self._opts.method, self.base_url + path, headers=headers, timeout=self._timeout, **kwargs
            )
        except requests.ConnectionError as exc:
            self.close()
            return Result(False, None, f"ConnectionError: {exc}"[:_TEXT_LIMIT], "connect")
        except requests.RequestException as exc:  # timeouts and protocol errors after connecting
            self.close()
            return Result(False, None, f"{type(exc).__name__}: {exc}"[:_TEXT_LIMIT], "http")
        text = resp.text[:_TEXT_LIMIT]
        if 200 <= resp.status_code < 300:
            return Result(True, resp.status_code, text, DONE)
        return Result(False, resp.status_code, text, "http")

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None
