"""SMTP replies as named constants: the one place a reply string is spelled out.

Everything in mailstorm that speaks SMTP (the fake ESP, the reference pipeline, the load users when they
classify a reply) uses these. Codes follow RFC 5321 section 4.2 and enhanced status codes RFC 3463; the
ESP-specific texts are what those services are documented to answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: basic code, enhanced status (may be empty) and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}" if self.status else f"{self.code} {self.text}"

    @property
    def transient(self) -> bool:
        """4yz: the client keeps the message and must retry (RFC 5321 4.2.1, 4.2.5)."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600


def parse_reply(text: str) -> Reply:
    """Parse "451 4.7.1 Try later" (or "451 Try later") into a Reply; raises ValueError naming the problem."""
    parts = text.strip().split(" ", 2)
    try:
        code = int(parts[0])
    except (ValueError, IndexError):
        raise ValueError(f"an SMTP reply must start with a 3-digit code, got {text!r}") from None
    if not 200 <= code <= 599:
        raise ValueError(f"SMTP reply code {code} is outside 200-599")
    # RFC 5321 4.2: a reply line is text (HT, SP, printable); a CR or LF would inject another reply.
    if any((ord(c) < 32 and c != "\t") or c == "\x7f" for c in text.strip()):
        raise ValueError(f"an SMTP reply is one line of text, without CR, LF or control characters: {text!r}")
    status = ""
    rest = parts[1:]
    if rest and _looks_like_status(rest[0]):
        status, rest = rest[0], rest[1:]
        if status[0] != str(code)[0]:
            raise ValueError(f"enhanced status {status} does not match reply code {code} (RFC 3463)")
    return Reply(code, status, " ".join(rest) or "")


def _looks_like_status(token: str) -> bool:
    bits = token.split(".")
    return len(bits) == 3 and all(b.isdigit() for b in bits) and bits[0] in {"2", "4", "5"}


# -- success ----------------------------------------------------------------------------------------
OK = Reply(250, "2.0.0", "OK")
OK_QUEUED = Reply(250, "2.0.0", "Ok: queued")
BYE = Reply(221, "2.0.0", "Bye")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")  # RFC 3207 4
DATA_GO_AHEAD = Reply(354, "", "End data with <CR><LF>.<CR><LF>")  # aiosmtpd's wording

# -- transient (4yz): the client keeps the message and retries ---------------------------------------
# 421 may answer any command and closes the channel (RFC 5321 3.8, 4.2.2).
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service not available, closing transmission channel")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many concurrent SMTP connections")  # SES wording
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages on this connection, reconnect")
IDLE_TIMEOUT = Reply(421, "4.4.2", "Connection timed out, closing")
TEMP_FAILURE = Reply(451, "4.3.0", "Temporary service failure")  # SES wording
GREYLISTED = Reply(451, "4.7.1", "Greylisted, please try again later")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 4.5.3.1.10
# Amazon SES answers throttling with 454 after DATA (454 is formally AUTH/STARTTLS, RFC 4954/3207).
SES_THROTTLED = Reply(454, "4.7.0", "Throttling failure: Maximum sending rate exceeded")
# SES past its 24-hour sending quota, word for word as SES documents it (no enhanced status code):
# docs.aws.amazon.com/ses/latest/dg/manage-sending-quotas-errors.html; the quota fault's default reply.
SES_DAILY_QUOTA = Reply(454, "", "Throttling failure: Daily message quota exceeded")
RATE_LIMITED = Reply(421, "4.7.28", "Rate limit exceeded, try again later")
QUEUE_FULL = Reply(452, "4.3.1", "Queue full, try again later")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available due to temporary reason")  # RFC 3207 4
AUTH_TEMP_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")  # RFC 4954 6

# -- permanent (5yz): the client gives up ---------------------------------------------------------------
SYNTAX_ERROR = Reply(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication Exchange line is too long")  # RFC 4954 4
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
MAILBOX_UNAVAILABLE = Reply(550, "5.1.1", "Mailbox unavailable")
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
TRANSACTION_FAILED = Reply(554, "5.0.0", "Transaction failed")
MESSAGE_REJECTED = Reply(554, "5.7.1", "Message rejected")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 6
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 6
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")  # RFC 3207 4
# What Amazon SES and SendGrid answer (each profile's YAML cites its source).
SES_AUTH_FAILED = Reply(535, "", "Authentication Credentials Invalid")
SES_AUTH_REQUIRED = Reply(530, "", "Authentication required")
SES_TLS_REQUIRED = Reply(530, "", "Must issue a STARTTLS command first")
SENDGRID_AUTH_FAILED = Reply(535, "", "Authentication failed: Bad username / password")
