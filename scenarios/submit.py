"""Submitting one message to the SUT over SMTP (smtplib) and classifying what happened.

``SmtpSubmitter`` keeps one SMTP session open for ``msgs_per_connection`` messages, then says QUIT and
opens a new one; it reconnects after a 421 (which closes the channel, RFC 5321 3.8) or a cut
connection. Every call ends in a ``Result``: accepted or not, the SUT's reply code and text (None for a
cut or refused connection) and the phase it ended in, so the ledger can say where a submission failed.
When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out in one write and the replies
are read back in order, saving two round trips per message with the same per-phase results.

smtplib is plain blocking socket code, which gevent's monkey-patching makes cooperative inside Locust;
this module imports neither gevent nor locust, so tests can drive it directly.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from dataclasses import dataclass

from mailstorm.scenarios.messages import Message
from mailstorm.scenarios.model import SmtpOptions

DONE = "done"


@dataclass(frozen=True, slots=True)
class Result:
    """How one submission ended: ``phase`` is where it failed, or ``done``."""

    ok: bool
    code: int | None
    text: str
    phase: str

    @property
    def outcome(self) -> str:
        """A short name for Locust's stats table: ``accepted``, ``451@rcpt``, ``cut@eod``..."""
        if self.ok:
            return "accepted"
        if self.code is None:
            return f"cut@{self.phase}"
        return f"{self.code}@{self.phase}"


_LINE_START_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(raw: bytes) -> bytes:
    """The message as sent after DATA: leading dots doubled, CRLF-terminated, then "." (RFC 5321 4.5.2)."""
    # Most messages have no line starting with "." at all: skip the regex then (it costs ~10 us at 2 KB).
    body = _LINE_START_DOT.sub(b"..", raw) if raw.startswith(b".") or b"\n." in raw else raw
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _text(resp: bytes | str) -> str:
    return (resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp).strip()


class SmtpSubmitter:
    """One SMTP client session to one endpoint, reused for up to ``msgs_per_connection`` messages."""

    def __init__(
        self, host: str, port: int, opts: SmtpOptions, *, msgs_per_connection: int, timeout_s: float
    ) -> None:
        self.host = host
        self.port = port
        self.target = f"{host}:{port}"
        self._opts = opts
        self._per_conn = msgs_per_connection
        self._timeout = timeout_s
        self._smtp: smtplib.SMTP | None = None
        self._sent_on_conn = 0
        self.connections = 0
        self.pipelining = False  # the current session's server offered PIPELINING (RFC 2920)
        self._phase = "connect"

    def _open(self) -> smtplib.SMTP:
        """Open, greet and (as configured) TLS-wrap and authenticate a session; ``self._phase`` tracks
        the step, so a failure is reported where it happened."""
        self._phase = "connect"
        # The constructor connects and reads the greeting: a non-220 greeting raises SMTPConnectError.
        smtp = smtplib.SMTP(self.host, self.port, local_hostname=self._opts.helo, timeout=self._timeout)
        self.connections += 1
        try:
            self._phase = "ehlo"
            code, resp = smtp.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, resp)
            if self._opts.starttls:
                self._phase = "starttls"
                # Test SUTs use self-signed certificates; verifying them is not what a load test checks.
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                smtp.starttls(context=ctx)
                smtp.ehlo()
            if self._opts.auth is not None:
                self._phase = "auth"
                smtp.login(self._opts.auth.user, self._opts.auth.password)
        except BaseException:
            self._abandon(smtp)
            raise
        return smtp

    def submit(self, msg: Message) -> Result:
        """Submit one message (MAIL, RCPT per recipient, DATA); never raises for an SMTP or socket error."""
        self._phase = "connect"
        try:
            if self._smtp is not None and self._sent_on_conn >= self._per_conn:
                self.close()
            if self._smtp is None:
                self._smtp, self._sent_on_conn = self._open(), 0
                self.pipelining = self._smtp.has_extn("pipelining")
            smtp = self._smtp
            self._sent_on_conn += 1
            refused = self._envelope_pipelined(smtp, msg) if self.pipelining else self._envelope(smtp, msg)
            if refused is not None:
                return refused
            self._phase = "eod"
            smtp.send(_dot_stuffed(msg.raw))
            code, resp = smtp.getreply()
            if code != 250:
                return self._refused(code, resp)
            return Result(True, code, _text(resp), DONE)
        except smtplib.SMTPResponseException as exc:  # greeting, EHLO, STARTTLS or AUTH refused
            self._drop()
            return Result(False, exc.smtp_code, _text(exc.smtp_error), self._phase)
        except (smtplib.SMTPException, OSError) as exc:
            # A cut, refused or timed-out connection: the SUT gave no reply for this message.
            self._drop()
            return Result(False, None, f"{type(exc).__name__}: {exc}".strip(), self._phase)

    # MAIL/RCPT are written by hand: smtplib's mail()/rcpt() re-parse each address with email.utils,
    # which costs more than the round trip at thousands of messages a second (ours are plain addr-specs).
    # DATA too: the ledger must tell a refused DATA command (phase data) from a reply, or a cut, after
    # the final "." (phase eod: the duplicate risk), which smtplib's data() folds together.

    def _envelope(self, smtp: smtplib.SMTP, msg: Message) -> Result | None:
        """MAIL, RCPT..., DATA one round trip each; a Result if refused, None once DATA said 354."""
        self._phase = "mail"
        smtp.putcmd("mail", f"FROM:<{msg.sender}>")
        code, resp = smtp.getreply()
        if code != 250:
            return self._refused(code, resp)
        self._phase = "rcpt"
        accepted = 0
        last: tuple[int, bytes] = (250, b"")
        for rcpt in msg.recipients:
            smtp.putcmd("rcpt", f"TO:<{rcpt}>")
            rcode, rresp = smtp.getreply()
            if rcode in (250, 251):
                accepted += 1
            else:
                last = (rcode, rresp)
                if rcode == 421:
                    return self._refused(rcode, rresp)
        if accepted == 0:
            return self._refused(*last)
        self._phase = "data"
        smtp.putcmd("data")
        code, resp = smtp.getreply()
        return self._refused(code, resp) if code != 354 else None

    def _envelope_pipelined(self, smtp: smtplib.SMTP, msg: Message) -> Result | None:
        """MAIL, RCPT... and DATA in one write when the server offers PIPELINING (RFC 2920), then the
        replies in order; the first refusal is reported at its own phase, as the step-wise path does."""
        lines = [f"MAIL FROM:<{msg.sender}>", *(f"RCPT TO:<{r}>" for r in msg.recipients), "DATA", ""]
        smtp.send("\r\n".join(lines))
        self._phase = "mail"
        mail = smtp.getreply()
        if mail[0] == 421:
            return self._refused(*mail)
        self._phase = "rcpt"
        accepted = 0
        refusal: tuple[int, bytes] | None = None
        for _ in msg.recipients:
            rcode, rresp = smtp.getreply()
            if rcode in (250, 251):
                accepted += 1
                continue
            if rcode == 421:
                return self._refused(rcode, rresp)
            refusal = refusal or (rcode, rresp)
        self._phase = "data"
        data = smtp.getreply()
        if data[0] == 421:
            return self._refused(*data)
        if mail[0] != 250 or accepted == 0:
            if data[0] == 354:  # a server that accepts DATA anyway gets an empty message, ended at once
                smtp.send(".\r\n")
                smtp.getreply()
            self._phase = "mail" if mail[0] != 250 else "rcpt"
            return self._refused(*(mail if mail[0] != 250 else refusal or data))
        return self._refused(*data) if data[0] != 354 else None

    def _refused(self, code: int, resp: bytes | str) -> Result:
        if code == 421:  # the server closes the channel after 421 (RFC 5321 3.8): start a new session
            self._drop()
        elif self._smtp is not None:
            try:
                self._smtp.rset()  # leave the session usable for the next message
            except (smtplib.SMTPException, OSError):
                self._drop()
        return Result(False, code, _text(resp), self._phase)

    def _abandon(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.close()
        except OSError:
            pass

    def _drop(self) -> None:
        if self._smtp is not None:
            self._abandon(self._smtp)
            self._smtp = None

    def close(self) -> None:
        """Say QUIT politely (a session the server already closed is just dropped)."""
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()
