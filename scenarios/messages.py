"""The message factory: realistic, seeded messages with a unique correlation id, cheap enough for 5k/s.

Faker (seeded per load process) writes a small pool of bodies per message class at start-up; each
message then only gets fresh headers: sender, recipients, Date, a unique Message-ID and the correlation
header ``X-Mailstorm-Id: <run_id>-<worker>-<seq>`` that the fake ESP's ledger records as ``id``. Building
a whole MIME tree per message with the email package would cost more than sending it. With
``load.correlation`` set to ``recipient`` every recipient is plus-addressed with the id as well, with
``body`` the text part starts with the id's token (``mailstorm.correlation``).

Plain module (no gevent/locust imports): the Locust users import it, and so do the tests.
"""

from __future__ import annotations

import base64
import bisect
import itertools
import random
import time
from dataclasses import dataclass
from email.utils import formatdate

from faker import Faker

from mailstorm.correlation import body_token, tag_recipient
from mailstorm.ledger import CORRELATION_HEADER
from mailstorm.scenarios.model import LoadSpec, MessageClass

# Bodies per class: enough variety that a content-hashing SUT does not see one message over and over,
# few enough that start-up stays well under a second even for 500 KB attachments.
POOL_SIZE = 16
ADDRESS_POOL = 512
# Header block as written below, without the variable parts; used to size the body to the class size.
_HEADER_ESTIMATE = 300
_LINE = 76  # RFC 5322 2.1.1 recommends lines of at most 78 characters


@dataclass(frozen=True, slots=True)
class Message:
    """One message ready to submit: envelope, the fields HTTP templates need, and the raw bytes."""

    id: str
    message_id: str
    cls: str
    sender: str
    recipients: tuple[str, ...]
    subject: str
    text: str
    html: str | None
    raw: bytes

    @property
    def raw_b64(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class _Body:
    subject: str
    text: str
    html: str | None
    mime: bytes  # Content-Type header onwards: the part after the per-message headers
    text_at: int  # where the text part's text starts in ``mime`` (the body token goes there)


def _body(subject: str, text: str, html: str | None, mime: bytes) -> _Body:
    # Every shape below has its text/plain part's header block first: the text starts after its blank line.
    text_at = mime.index(b"\r\n\r\n", mime.index(b"text/plain")) + 4
    return _Body(subject, text, html, mime, text_at)


def _wrap(text: str) -> str:
    words, lines, line = text.split(), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > _LINE:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    if line:
        lines.append(line)
    return "\r\n".join(lines)


class MessageFactory:
    """Makes the messages of one load process; ``next()`` is deterministic for a (seed, worker)."""

    def __init__(self, spec: LoadSpec, *, run_id: str, worker: int, seed: int) -> None:
        self.run_id = run_id
        self.worker = worker
        self._rng = random.Random(f"mailstorm-messages-{seed}-{worker}")
        self._fake = Faker("en_US")
        self._fake.seed_instance(self._rng.getrandbits(64))
        self._classes = spec.messages
        self._cum_weights = list(itertools.accumulate(c.weight for c in spec.messages))
        self._pools = [[self._body(c, i) for i in range(POOL_SIZE)] for c in spec.messages]
        self._senders = [
            f"{self._fake.name()} <{self._fake.user_name()}@{spec.sender_domain}>" for _ in range(32)
        ]
        self._recipients = [
            f"{self._fake.user_name()}{i}@{spec.recipient_domain}" for i in range(ADDRESS_POOL)
        ]
        self._domain = spec.sender_domain
        self._correlation = spec.correlation
        self._seq = itertools.count(1)
        self._date_at = 0
        self._date = ""

    # -- start-up: the body pools ---------------------------------------------------------------------

    def _body(self, cls: MessageClass, n: int) -> _Body:
        subject = self._fake.sentence(nb_words=6).rstrip(".")
        target = max(int(cls.size) - _HEADER_ESTIMATE, 64)
        if cls.attachment:
            text = self._paragraphs(min(target // 10, 2000))
            # base64 grows 3 bytes to 4, plus CRLF every 76 characters
            attach_raw = max((target - len(text) - 400) * 3 * 76 // (4 * 78), 16)
            return _body(subject, text, None, self._mixed(text, attach_raw, n))
        if cls.html:
            text = self._paragraphs(target * 2 // 5)
            html = self._html(target * 3 // 5 - 200)
            return _body(subject, text, html, self._alternative(text, html, n))
        text = self._paragraphs(target - 80)
        mime = (
            b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
            + text.encode("ascii")
            + b"\r\n"
        )
        return _body(subject, text, None, mime)

    def _paragraphs(self, size: int) -> str:
        parts: list[str] = []
        total = 0
        while total < size:
            p = _wrap(self._fake.paragraph(nb_sentences=6))
            parts.append(p)
            total += len(p) + 4
        return "\r\n\r\n".join(parts)[: max(size, 1)].rstrip()

    def _html(self, size: int) -> str:
        parts = ["<html><body>"]
        total = 30
        while total < size:
            p = f"<p>{_wrap(self._fake.paragraph(nb_sentences=5))}</p>"
            parts.append(p)
            total += len(p) + 2
        parts.append("</body></html>")
        return "\r\n".join(parts)

    def _alternative(self, text: str, html: str, n: int) -> bytes:
        b = f"=_alt_{n}_{self._rng.getrandbits(48):x}"
        return (
            f'Content-Type: multipart/alternative; boundary="{b}"\r\n\r\n'
            f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
            f"--{b}\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n{html}\r\n"
            f"--{b}--\r\n"
        ).encode("ascii")

    def _mixed(self, text: str, attach_raw: int, n: int) -> bytes:
        b = f"=_mix_{n}_{self._rng.getrandbits(48):x}"
        blob = base64.encodebytes(self._rng.randbytes(attach_raw)).replace(b"\n", b"\r\n")
        return (
            (
                f'Content-Type: multipart/mixed; boundary="{b}"\r\n\r\n'
                f"--{b}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{text}\r\n"
                f'--{b}\r\nContent-Type: application/pdf; name="invoice-{n}.pdf"\r\n'
                f'Content-Disposition: attachment; filename="invoice-{n}.pdf"\r\n'
                f"Content-Transfer-Encoding: base64\r\n\r\n"
            ).encode("ascii")
            + blob
            + f"--{b}--\r\n".encode("ascii")
        )

    # -- per message ----------------------------------------------------------------------------------

    def next(self) -> Message:
        seq = next(self._seq)
        mid_id = f"{self.run_id}-{self.worker}-{seq}"
        ci = bisect.bisect_right(self._cum_weights, self._rng.random() * self._cum_weights[-1])
        ci = min(ci, len(self._classes) - 1)
        cls = self._classes[ci]
        body = self._pools[ci][self._rng.randrange(POOL_SIZE)]
        r = cls.recipients
        nrcpt = r if isinstance(r, int) else self._rng.randint(r[0], r[1])
        rcpts = tuple(self._rng.sample(self._recipients, min(nrcpt, ADDRESS_POOL)))
        if self._correlation == "recipient":
            rcpts = tuple(tag_recipient(r, mid_id) for r in rcpts)
        text, mime = body.text, body.mime
        if self._correlation == "body":
            token = f"{body_token(mid_id)}\r\n\r\n"
            text = token + text
            mime = mime[: body.text_at] + token.encode("ascii") + mime[body.text_at :]
        sender = self._senders[self._rng.randrange(len(self._senders))]
        message_id = f"<{mid_id}@loadgen.{self._domain}>"
        head = (
            f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\nSubject: {body.subject}\r\n"
            f"Date: {self._now()}\r\nMessage-ID: {message_id}\r\n{CORRELATION_HEADER}: {mid_id}\r\n"
            f"MIME-Version: 1.0\r\n"
        ).encode("ascii")
        return Message(
            id=mid_id,
            message_id=message_id,
            cls=cls.name,
            sender=sender[sender.index("<") + 1 : -1],
            recipients=rcpts,
            subject=body.subject,
            text=text,
            html=body.html,
            raw=head + mime,
        )

    def _now(self) -> str:
        # formatdate costs microseconds; at thousands of messages a second, once a second is enough.
        sec = int(time.time())
        if sec != self._date_at:
            self._date_at, self._date = sec, formatdate(sec, usegmt=True)
        return self._date
