"""SMTP in: the aiosmtpd handler that refuses to be an open relay and queues before it says 250.

Relay policy (RFC 5321 section 3.6.2 leaves it to the operator; Postfix's ``mynetworks`` is the model):
only peers inside ``relay_networks`` (loopback by default) may name recipients. Acceptance: the message
row is committed to the queue, then the ``sut.accepted`` record is written, then 250 is answered, so a
250 the client saw always has a durable row behind it.
"""

from __future__ import annotations

import ipaddress
import logging
from email.parser import BytesHeaderParser
from email.policy import compat32

from aiosmtpd.smtp import SMTP

from mailstorm import replies
from mailstorm.harness.reference.store import Store
from mailstorm.ledger import CORRELATION_HEADER, LedgerWriter, SutAccepted

log = logging.getLogger("mailstorm.reference")
# Recipients per message, as Postfix's smtpd_recipient_limit; past it 452 (RFC 5321 4.5.3.1.10), so one
# session cannot grow an envelope without bound.
MAX_RECIPIENTS = 1000
_headers = BytesHeaderParser(policy=compat32)


def correlation_id(data: bytes) -> str:
    """The harness header's value, else the Message-ID, else "" (the header section is parsed only)."""
    msg = _headers.parsebytes(data, headersonly=True)
    value = msg.get(CORRELATION_HEADER) or msg.get("Message-ID") or ""
    return str(value).strip()


class InboundSMTP(SMTP):
    """aiosmtpd's session, closed when the client ends its stream. aiosmtpd cancels the session task on
    EOF and its clean-up closes the connection -- unless the task had not started yet (EOF right after
    connect), which left a half-open connection until the idle timeout (5 minutes)."""

    def eof_received(self) -> bool:
        super().eof_received()
        return False

    def _getaddr(self, arg: str):
        # "MAIL FROM:<" (nothing after the bracket): the email parser raises IndexError, which aiosmtpd
        # does not catch (it catches HeaderParseError): a malformed address (553), not a session error.
        try:
            return super()._getaddr(arg)
        except IndexError:
            return None, None


class InboundHandler:
    """aiosmtpd handler: RCPT policy and queue-before-250 acceptance."""

    def __init__(self, store: Store, ledger: LedgerWriter, networks, on_accept=None) -> None:
        self.store = store
        self.ledger = ledger
        self.networks = networks
        self.on_accept = on_accept  # called with the queue id once the row is durable
        self.accepted = 0

    def _may_relay(self, peer) -> bool:
        host = peer[0] if isinstance(peer, tuple) else str(peer)
        try:
            addr = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.networks)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if not self._may_relay(session.peer):
            return str(replies.RELAY_DENIED)
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return str(replies.TOO_MANY_RECIPIENTS)
        envelope.rcpt_tos.append(address)
        return str(replies.OK)

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content or envelope.content
        corr = correlation_id(data)
        try:
            qid = await self.store.add(corr, envelope.mail_from or "", list(envelope.rcpt_tos), data)
        except Exception as exc:  # a full disk or a broken file: the client keeps the message (4yz)
            log.error("queue write failed, answering %s: %s", replies.INSUFFICIENT_STORAGE.code, exc)
            return str(replies.INSUFFICIENT_STORAGE)
        self.ledger.write(SutAccepted(id=corr, queue_id=qid))
        self.accepted += 1
        if self.on_accept is not None:
            self.on_accept(qid)
        return str(replies.OK_QUEUED)
