"""Relay clients: hand one queued message to the ESP and classify what happened.

Every attempt ends in an ``Outcome``: delivered (to all or some recipients), transient (4yz, a cut
connection, a timeout: retry later), or permanent (5yz: bounce). One client object per worker keeps its
connection open across messages, as a real MTA does; any failure that leaves the session in doubt drops
the connection so the next attempt starts clean.

Towards an ESP that requires them (``RelaySecurity``), the SMTP relay does STARTTLS or implicit TLS and
AUTH once per connection, and the HTTP relay speaks https, trusting the given CA file. A connection that
cannot be set up -- a TLS handshake that fails, STARTTLS not offered, a 530/535/454 at AUTH -- defers the
message (transient), as Postfix does by default (smtp_sasl_auth_soft_bounce): it is the relay's
configuration or the ESP's state that failed, not the message.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path

import aiohttp
import aiosmtplib

from mailstorm.harness.reference.config import RelayTarget
from mailstorm.ledger import CAMPAIGN_HEADER, CORRELATION_HEADER

# aiosmtplib raises these for a session that can no longer be trusted (RFC 5321 4.2.2: 421 closes it).
_CONNECTION_ERRORS = (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one relay attempt did. ``retry`` and ``refused`` list (recipient, code, text) of recipients
    refused for now / for good when the others were delivered or only some were refused for good."""

    status: str  # "delivered" | "transient" | "permanent"
    code: int | None
    text: str
    retry: list[tuple[str, int, str]] = field(default_factory=list)
    refused: list[tuple[str, int, str]] = field(default_factory=list)


def _transient(code: int | None) -> bool:
    return code is None or 400 <= code < 500


@dataclass(frozen=True)
class RelaySecurity:
    """TLS (off, starttls, implicit; https for the HTTP relay when not off) trusting ``ca`` (the
    system's CAs when None), and the AUTH login."""

    tls: str = "off"
    ca: Path | None = None
    auth: tuple[str, str] | None = field(default=None, repr=False)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)


class SmtpRelay:
    """Relays over SMTP with one persistent aiosmtplib connection (TLS and AUTH set up once on it)."""

    def __init__(self, target: RelayTarget, timeout: float, security: RelaySecurity | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.security = security or RelaySecurity()
        self._tls_context = self.security.context() if self.security.tls != "off" else None
        self._smtp: aiosmtplib.SMTP | None = None

    async def _connection(self) -> aiosmtplib.SMTP | Outcome:
        """The open connection, or the transient outcome of an ESP that refused its set-up (STARTTLS,
        AUTH: the reply's code, or None, and its text)."""
        if self._smtp is None or not self._smtp.is_connected:
            tls = self.security.tls
            smtp = aiosmtplib.SMTP(
                hostname=self.target.host,
                port=self.target.port,
                timeout=self.timeout,
                use_tls=tls == "implicit",
                start_tls=tls == "starttls",
                tls_context=self._tls_context,
                local_hostname="reference.mailstorm.test",
            )
            try:
                await smtp.connect()
                if self.security.auth is not None:
                    await smtp.login(*self.security.auth)
            except _CONNECTION_ERRORS:
                smtp.close()
                raise
            except aiosmtplib.SMTPResponseException as exc:  # 530/535/454 at STARTTLS or AUTH
                smtp.close()
                return Outcome("transient", exc.code, exc.message)
            except aiosmtplib.SMTPException as exc:  # "STARTTLS extension not supported by server"
                smtp.close()
                return Outcome("transient", None, str(exc))
            self._smtp = smtp
        return self._smtp

    async def close(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await asyncio.wait_for(self._smtp.quit(), 2)
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._smtp.close()
        self._smtp = None

    def _drop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            self._smtp = None

    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> Outcome:
        try:
            smtp = await self._connection()
        except _CONNECTION_ERRORS as exc:  # refused, reset, a TLS handshake that failed
            self._drop()
            return Outcome("transient", None, f"{type(exc).__name__}: {exc}".strip())
        if isinstance(smtp, Outcome):
            return smtp  # the ESP refused the set-up
        try:
            errors, text = await smtp.sendmail(mail_from, rcpts, data)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if 421 in codes:
                self._drop()
            retry = [(r.recipient, r.code, r.message) for r in exc.recipients if _transient(r.code)]
            refused = [(r.recipient, r.code, r.message) for r in exc.recipients if not _transient(r.code)]
            if retry:
                # Some recipients may be refused for good while others wait: bounce those, retry these.
                return Outcome("transient", retry[0][1], retry[0][2], retry=retry, refused=refused)
            return Outcome("permanent", refused[0][1], refused[0][2])
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or self._smtp is None or not self._smtp.is_connected:
                self._drop()
            return Outcome("transient" if _transient(exc.code) else "permanent", exc.code, exc.message)
        except _CONNECTION_ERRORS as exc:
            self._drop()
            return Outcome("transient", None, f"{type(exc).__name__}: {exc}".strip())
        except (aiosmtplib.SMTPException, ValueError) as exc:
            # Not a reply from the ESP: a malformed address or an unsupported extension. Retrying the
            # same bytes cannot help, so it bounces.
            self._drop()
            return Outcome("permanent", None, f"{type(exc).__name__}: {exc}")
        retry = [(r, resp.code, resp.message) for r, resp in errors.items() if _transient(resp.code)]
        refused = [(r, resp.code, resp.message) for r, resp in errors.items() if not _transient(resp.code)]
        # aiosmtplib's data() raises for anything but 250, so reaching here means exactly 250.
        return Outcome("delivered", 250, text, retry=retry, refused=refused)


class HttpRelay:
    """Relays over the ESP's SendGrid-shaped HTTP API (POST /v3/mail/send, Bearer key, 202 = accepted).

    Status classes follow SendGrid's documentation: 2xx accepted; 429 (rate limit), 408 and 5xx are
    worth retrying; any other 4xx means this request will never succeed, so the message bounces.
    """

    PATH = "/v3/mail/send"

    def __init__(
        self,
        target: RelayTarget,
        timeout: float,
        api_key: str,
        concurrency: int,
        security: RelaySecurity | None = None,
    ) -> None:
        self.url = f"{target.base_url}{self.PATH}"
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.api_key = api_key
        self.concurrency = concurrency
        https = self.url.startswith("https://")
        self._ssl = (security or RelaySecurity()).context() if https else None
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.concurrency, ssl=self._ssl or True),
                headers={"Authorization": f"Bearer {self.api_key}"},
                timeout=self.timeout,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, mail_from: str, rcpts: list[str], data: bytes) -> Outcome:
        payload = sendgrid_payload(mail_from, rcpts, data)
        try:
            async with self._client().post(self.url, json=payload) as resp:
                text = (await resp.text())[:300]
                code = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome("transient", None, f"{type(exc).__name__}: {exc}".strip())
        if 200 <= code < 300:
            return Outcome("delivered", code, resp.headers.get("X-Message-Id", "") or text)
        if code in (408, 429) or code >= 500:
            return Outcome("transient", code, text)
        return Outcome("permanent", code, text)


def _body(msg: Message) -> tuple[str, str]:
    """The first text/plain part (else text/html, else the raw payload) as (content type, text)."""
    parts = list(msg.walk()) if msg.is_multipart() else [msg]
    for wanted in ("text/plain", "text/html"):
        for part in parts:
            if part.get_content_type() == wanted and not part.is_multipart():
                raw = part.get_payload(decode=True) or b""
                return wanted, raw.decode(part.get_content_charset() or "utf-8", errors="replace")
    return "text/plain", str(msg.get_payload())


def sendgrid_payload(mail_from: str, rcpts: list[str], data: bytes) -> dict:
    """The SendGrid v3 mail/send body for one queued message, keeping the correlation header intact."""
    msg = message_from_bytes(data, policy=compat32)
    ctype, text = _body(msg)
    from_header = getaddresses([str(msg.get("From", ""))])
    sender = mail_from or (from_header[0][1] if from_header else "")
    headers = {CORRELATION_HEADER: str(msg.get(CORRELATION_HEADER, "")).strip()}
    if msg.get("Message-ID"):
        headers["Message-ID"] = str(msg["Message-ID"]).strip()
    if msg.get(CAMPAIGN_HEADER):
        headers[CAMPAIGN_HEADER] = str(msg[CAMPAIGN_HEADER]).strip()
    return {
        "personalizations": [{"to": [{"email": r} for r in rcpts]}],
        "from": {"email": sender},
        "subject": str(msg.get("Subject", "")) or "(no subject)",
        "content": [{"type": ctype, "value": text or " "}],
        "headers": {k: v for k, v in headers.items() if v},
    }
