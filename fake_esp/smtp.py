"""The fake ESP's SMTP listener: aiosmtpd with the fault engine asked at every phase, and the ledger.

Phases and where they hook into aiosmtpd: connect (before the banner: ``_handle_client``), ehlo
(``handle_EHLO``/``handle_HELO``), mail (``handle_MAIL``), rcpt (``handle_RCPT``), data (the DATA
command, before the 354: ``smtp_DATA``), eod (after the final ".", before the answer: ``handle_DATA``).
The message itself is read in whole reads, not line by line (mailstorm.fake_esp.smtp_wire.FastWire).

Ledger. Every record is written before the reply it describes is sent: esp.accepted before the 250 at
eod (acked=false when the client is cut off or left hanging after the ESP kept the message), esp.replied
before a fault's reply or cut, and before the 552 for a message over the size limit (aiosmtpd's own
552 texts are replaced by mailstorm.replies.MESSAGE_TOO_BIG) and the 452 past ``max_recipients``,
esp.fault for every fault that acted.

Outage. An ``OutageWatch`` (mailstorm.fake_esp.outage_watch) follows the engine's outages that take SMTP
down: mode refuse closes the listener and cuts every open session (the kernel then refuses connections),
mode hang leaves the listener open and the engine answers "hang" at every phase; when it ends the
listener opens again.

TLS and AUTH (mailstorm.fake_esp.smtp_secure). STARTTLS, implicit TLS and the tls faults (phase ``tls``).
With ``require_tls``, MAIL and AUTH before STARTTLS get the profile's 530 (and EHLO hides AUTH until
then); with credentials (mailstorm.fake_esp.auth), MAIL before a successful AUTH gets the profile's 530
and a wrong password its 535. Phase ``auth`` is asked at every AUTH command, before the credentials
are checked. Each refusal is an esp.replied record (phase ``tls``, ``auth`` or ``mail``); the AUTH user's
name (never its password) is the ``key`` of every message the session sends, and ``tls`` the protocol
version of an encrypted session.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import re
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP

from mailstorm.correlation import carried_id
from mailstorm.fake_esp.auth import Credentials
from mailstorm.fake_esp.counters import Counters
from mailstorm.fake_esp.deliveries import Deliveries
from mailstorm.fake_esp.engine import Engine, Outage
from mailstorm.fake_esp.faults.base import (
    DISCONNECT,
    HANG,
    PASS_ACTION,
    QUEUE,
    REPLY,
    TARPIT,
    Action,
    Context,
    ended_record,
)
from mailstorm.fake_esp.faults.tls import CUT_MID_DATA, NO_STARTTLS
from mailstorm.fake_esp.outage_watch import OutageWatch
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.fake_esp.smtp_secure import SecureSession, authenticate
from mailstorm.fake_esp.smtp_wire import FastWire, cache_introspection, guard_logs
from mailstorm.fake_esp.spec import EspSpec
from mailstorm.fake_esp.tls import Contexts
from mailstorm.ledger import (
    CAMPAIGN_HEADER,
    SHA_HEX_DIGITS,
    EspAccepted,
    EspFault,
    EspReplied,
    LedgerWriter,
)
from mailstorm.replies import (
    AUTH_LINE_TOO_LONG,
    MESSAGE_TOO_BIG,
    OK_QUEUED,
    TOO_MANY_RECIPIENTS,
    Reply,
    parse_reply,
)

log = logging.getLogger("mailstorm.fake_esp.smtp")

_QUEUED = str(OK_QUEUED)
_TOO_BIG = str(MESSAGE_TOO_BIG).encode()
_AIOSMTPD_552 = b"552 Error"  # aiosmtpd's own size refusals (MAIL SIZE= and too much DATA)
_CAMPAIGN_NAME = CAMPAIGN_HEADER.encode().lower()


def _header(name: bytes, rx: re.Pattern[bytes], head: bytes, low: bytes) -> str | None:
    """The first value ``rx`` (one capture group) finds in a header block, decoded; ``low`` is the block
    lower-cased: a header whose ``name`` it does not hold is not searched for (most messages lack one).
    ``find``, not ``in``: ``bytes in bytes`` first tries the operand as an int and clears the TypeError
    (~1,900 instructions a look-up, three per message)."""
    if low.find(name) < 0:
        return None
    m = rx.search(head)
    return m.group(1).decode("utf-8", "replace") if m else None


class SmtpService:
    """One worker's SMTP listener, its open sessions and its outage state."""

    def __init__(
        self,
        spec: EspSpec,
        engine: Engine,
        ledger: LedgerWriter,
        counters: Counters,
        worker: int,
        tls: Contexts | None = None,
    ):
        self.spec = spec
        self.engine = engine
        self.ledger = ledger
        self.counters = counters
        self.worker = worker
        self.tls = tls
        self.implicit = spec.tls == "implicit"
        self.credentials = Credentials(spec.auth)
        # The ESP's own words for a wrong password, a missing AUTH and a missing STARTTLS.
        replies = load_profile(spec.profile or "generic-smtp").smtp
        self.auth_failed = parse_reply(replies.auth_failure)
        self.auth_required = parse_reply(replies.auth_required)
        self.tls_required = parse_reply(replies.tls_required)
        self.sessions: set[EspSMTP] = set()
        guard_logs()
        cache_introspection()
        self.deliveries = Deliveries(ledger)  # messages accepted into the backlog (a queue action)
        self.handler = Handler()
        self._session_ids = itertools.count(1)
        self._session_prefix = f"{worker}-{os.getpid()}-"
        self._server: asyncio.AbstractServer | None = None
        self.watch = OutageWatch(engine, "smtp", ledger, close=self._go_down, reopen=self._reopen)
        # Called with each kept message (its esp.accepted fields plus sender, to and content): the
        # worker's message store and the webhook poster.
        self.accepted_hooks: list[Any] = []
        self._id_name = spec.correlation_header.encode().lower()
        header = re.escape(spec.correlation_header.encode())
        self._id_re = re.compile(rb"(?im)^" + header + rb"[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$")
        self._mid_re = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*<?([^\r\n>]*?)>?[ \t]*\r?$")
        self._campaign_re = re.compile(
            rb"(?im)^" + re.escape(CAMPAIGN_HEADER.encode()) + rb"[ \t]*:[ \t]*(\S[^\r\n]*?)[ \t]*\r?$"
        )
        if spec.store_bodies is not None:
            Path(spec.store_bodies).mkdir(parents=True, exist_ok=True)

    @property
    def ready(self) -> bool:
        """Listening, or deliberately not (an outage in refuse mode)."""
        return self._server is not None or self.watch.outage is not None

    def session_opened(self, session: EspSMTP) -> None:
        self.sessions.add(session)
        self.counters.sessions += 1
        self.counters.open_sessions += 1
        if self.engine.shared is not None:
            self.engine.shared.session_opened()

    def session_closed(self, session: EspSMTP) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.counters.open_sessions -= 1
            if self.engine.shared is not None:
                self.engine.shared.session_closed()

    def new_session_id(self) -> str:
        return self._session_prefix + str(next(self._session_ids))

    async def start(self) -> None:
        await self._listen()
        self.watch.start()

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: EspSMTP(self, loop),
            host=self.spec.bind,
            port=self.spec.smtp_port,
            reuse_port=self.spec.processes > 1,  # N workers share the port (SO_REUSEPORT)
            backlog=1024,
        )

    async def close(self) -> None:
        self.watch.stop()
        self.deliveries.close()
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in list(self.sessions):
            session.abort()

    def _go_down(self, outage: Outage) -> None:
        """A refuse outage begins: stop accepting (connections are refused) and cut every session."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in list(self.sessions):
            session.cut_by_outage(outage.fault)

    async def _reopen(self) -> None:
        if self._server is None:
            await self._listen()

    def ids(
        self, content: bytes, head: bytes, low: bytes, rcpts: list[str] | None = None
    ) -> tuple[str | None, str | None, str | None]:
        """(correlation id, Message-ID, campaign) of a message, its header block and that lower-cased
        (``Context.head``, ``Context.low_head``): the id from the carrier the spec names (recipient,
        body), else the correlation header, else the Message-ID; the campaign from its header."""
        mid = _header(b"message-id", self._mid_re, head, low)
        cid = _header(self._id_name, self._id_re, head, low)
        campaign = _header(_CAMPAIGN_NAME, self._campaign_re, head, low)
        carried = carried_id(self.spec.correlation, rcpts or (), content)
        return (carried or cid or mid), mid, campaign

    def keep(
        self,
        session: EspSMTP,
        envelope: Any,
        content: bytes,
        cid: str | None,
        mid: str | None,
        campaign: str | None,
        acked: bool,
        hold: Action | None = None,
    ):
        """Keep an accepted message (esp.accepted) and tell the hooks (webhooks: its delivery) -- when
        ``hold`` (a queue action) holds it in the backlog, when it leaves the backlog instead."""
        sha = hashlib.sha256(content).hexdigest()
        if self.spec.store_bodies is not None:
            Path(self.spec.store_bodies, f"{sha}.eml").write_bytes(content)
        self.ledger.write(
            EspAccepted(
                id=cid, mid=mid, size=len(content), rcpts=len(envelope.rcpt_tos), sha=sha[:SHA_HEX_DIGITS],
                proto="smtp", api=None, peer=session.ctx.peer, session=session.ctx.session,
                key=session.ctx.auth_user, acked=acked, tls=session.tls_version, held=hold is not None,
                to=list(envelope.rcpt_tos), campaign=campaign,
            )
        )  # fmt: skip
        self.counters.accepted += 1
        kept = {"id": cid, "mid": mid, "api": None, "sender": envelope.mail_from, "to": envelope.rcpt_tos}
        kept |= {"proto": "smtp", "size": len(content), "sha": sha, "content": content}

        def delivered() -> None:
            for hook in self.accepted_hooks:
                hook(kept)

        if hold is None:
            delivered()
        else:
            self.deliveries.hold(
                [(cid, None)],
                proto="smtp",
                api=None,
                fault=hold.fault or "",
                hold_s=hold.hold_s,
                then=delivered,
            )


class EspSMTP(SecureSession, FastWire, SMTP):
    """One SMTP session: aiosmtpd's state machine plus the connect and DATA-start phases, the fault
    actions (delay, reply, cut, tarpit, hang), TLS and AUTH (SecureSession) and the ledger records."""

    def __init__(self, service: SmtpService, loop: asyncio.AbstractEventLoop) -> None:
        self.svc = service
        self.ctx = Context(session=service.new_session_id())
        self._tarpit_s = 0.0
        self._close_after_reply = False
        self._init_secure()
        starttls = service.tls.good if service.tls is not None and service.spec.tls == "starttls" else None
        super().__init__(
            service.handler,
            data_size_limit=service.spec.max_message_size,
            enable_SMTPUTF8=True,
            hostname=service.spec.hostname,
            ident="mailstorm fake ESP",
            timeout=service.spec.idle_timeout,
            tls_context=starttls,
            # The TLS requirement is ours (require_tls, with the profile's texts); aiosmtpd's would also
            # refuse AUTH on an implicit-TLS session, which it does not know is encrypted.
            auth_require_tls=False,
            authenticator=authenticate,
            loop=loop,
        )

    # -- session bookkeeping ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._opened:  # a new connection (not the STARTTLS re-entry, not the end of a handshake)
            self._opened = True
            peer = transport.get_extra_info("peername")
            self.ctx.peer = peer[0] if peer else ""
            self.svc.session_opened(self)
            if self.svc.implicit and self._begin_implicit(transport):  # type: ignore[arg-type]
                return  # the session starts when the handshake completes
        super().connection_made(transport)
        self._after_connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.svc.session_closed(self)
        if self.session is None:
            return  # ended before aiosmtpd started it (implicit TLS cut at the handshake)
        super().connection_lost(error)

    def eof_received(self) -> bool:
        # The client ended its stream: aiosmtpd cancels the session task, whose clean-up closes the
        # connection -- unless the task had not started yet (EOF right after connect), which left the
        # half-open connection holding a session until the idle timeout. Close it here in every case.
        super().eof_received()
        return False

    def _getaddr(self, arg: str):
        # "MAIL FROM:<" (nothing after the bracket): the email parser raises IndexError, which aiosmtpd
        # does not catch (it catches HeaderParseError): a malformed address (553), not a session error.
        try:
            return super()._getaddr(arg)
        except IndexError:
            return None, None

    def abort(self) -> None:
        transport = self.transport if self.transport is not None else self._raw  # mid-handshake: the TCP one
        if transport is not None:
            transport.abort()

    def cut_by_outage(self, fault: str) -> None:
        self._record_cut(self.ctx.phase, fault, None)
        self.abort()
        self._session_gone()  # a session still in its handshake gets no connection_lost

    # -- asking the engine and acting on it ---------------------------------------------------------
    def decide(self, phase: str) -> Action:
        self.ctx.phase = phase  # also where an outage finds the session when it cuts it
        shared = self.svc.engine.shared  # with N workers, the ESP's open sessions, not this worker's
        self.ctx.open_sessions = self.svc.counters.open_sessions if shared is None else shared.open_sessions
        return self.svc.engine.decide(phase, self.ctx)

    def _record_cut(self, phase: str, fault: str | None, msg_id: str | None) -> None:
        self.svc.ledger.write(
            EspReplied(
                proto="smtp", phase=phase, code=None, text=None, fault=fault, session=self.ctx.session,
                id=msg_id, peer=self.ctx.peer,
            )
        )  # fmt: skip
        self.svc.counters.cut += 1

    async def enact(
        self, act: Action, phase: str, msg_id: str | None = None, before_cut=None
    ) -> Reply | None:
        """Carry out ``act`` at ``phase``: returns the reply to give instead of the normal one, or None
        to carry on as normal. A cut or a hang never returns (the session task is cancelled when the
        connection goes); ``before_cut`` runs first (at eod: keep the message, acked=false)."""
        ledger, ctx = self.svc.ledger, self.ctx
        for f in act.fired:
            ledger.write(
                EspFault(
                    fault=f.fault, ftype=f.ftype, phase=phase, action=f.action, delay_s=f.delay_s,
                    session=ctx.session,
                )
            )  # fmt: skip
            if f.ended:
                ledger.write(ended_record(f, phase, ctx.session))
        if act.delay_s > 0:
            await asyncio.sleep(act.delay_s)
        if act.kind == REPLY or (act.kind == TARPIT and act.reply is not None):
            reply = act.reply
            ledger.write(
                EspReplied(
                    proto="smtp", phase=phase, code=reply.code, text=str(reply), fault=act.fault,
                    session=ctx.session, id=msg_id, peer=ctx.peer,
                )
            )  # fmt: skip
            self._close_after_reply = act.closes
            self._tarpit_s = act.byte_delay_s
            return reply
        if act.kind == TARPIT:
            self._tarpit_s = act.byte_delay_s
            return None
        if act.kind in (DISCONNECT, HANG):
            if before_cut is not None:
                before_cut()
            if act.kind == DISCONNECT:
                self._record_cut(phase, act.fault, msg_id)
                self.abort()
            await asyncio.get_running_loop().create_future()  # cancelled by connection_lost
        return None

    # -- phases aiosmtpd has no hook for ------------------------------------------------------------
    async def _handle_client(self) -> None:
        act = self.decide("connect")
        if act is not PASS_ACTION:
            reply = await self.enact(act, "connect")
            if reply is not None:
                # A refusal at the banner ends the session (421 must; others: the client cannot go on).
                self._close_after_reply = True
                await self.push(str(reply))
                return
        await super()._handle_client()

    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope.rcpt_tos and not arg and self.session.host_name:
            act = self.decide("data")
            if act.kind == CUT_MID_DATA:
                await self.cut_mid_data(act)
                return
            if act is not PASS_ACTION:
                reply = await self.enact(act, "data")
                if reply is not None:
                    await self.push(str(reply))
                    return
        await super().smtp_DATA(arg)

    # -- AUTH answers longer than a line ----------------------------------------------------------------
    # aiosmtpd reads a client's AUTH answer with readline(), which raises ValueError on a line longer than
    # the stream's limit instead of answering, and the session died with a traceback. RFC 4954 section 4
    # answers such a line 500 5.5.6 and the session goes on; MISSING ends the exchange with nothing more
    # said, as aiosmtpd's own client abort ("*", answered 501) does.
    async def challenge_auth(self, challenge: str | bytes, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().challenge_auth(challenge, *args, **kwargs)
        except ValueError:  # StreamReader.readline: "chunk is longer than limit"
            await self.push(str(AUTH_LINE_TOO_LONG))
            return MISSING

    # -- writing replies ----------------------------------------------------------------------------------
    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd goes on reading the lines a client pipelined after it closed the connection itself
        # ("too many bogus commands"); what then fails on the closed transport (a write; a TLS one's
        # resume_reading) is no session exception: nothing can be answered, the session is ending.
        if self.tls_setup_failed(error) or self._closing():
            return ""
        return await super().handle_exception(error)

    async def push(self, status: str | bytes) -> None:
        if self._closing():
            return  # the connection is going: there is no one to answer (see handle_exception)
        # "replace": aiosmtpd echoes arguments it decoded with surrogateescape (VRFY <junk bytes>); a
        # strict encode raised in the middle of the session.
        data = status.encode("utf-8", "replace") if isinstance(status, str) else status
        if data.startswith(_AIOSMTPD_552):
            self.svc.ledger.write(
                EspReplied(
                    proto="smtp", phase="eod" if self.envelope.rcpt_tos else "mail",
                    code=MESSAGE_TOO_BIG.code, text=str(MESSAGE_TOO_BIG), fault=None,
                    session=self.ctx.session, id=None, peer=self.ctx.peer,
                )
            )  # fmt: skip
            data = _TOO_BIG
        final = data[3:4] != b"-"  # the last line of a (multi-line) reply
        if final:
            self.svc.counters.replies[data[:3]] += 1
        if self._tarpit_s:
            delay = self._tarpit_s
            if final:
                self._tarpit_s = 0.0
            for i in range(len(data) + 2):
                self._writer.write((data + b"\r\n")[i : i + 1])
                await self._writer.drain()
                await asyncio.sleep(delay)
        else:
            self._writer.write(data + b"\r\n")
            await self._writer.drain()
        if final and self._close_after_reply:
            self._close_after_reply = False
            if self.transport is not None:  # None: the client left first
                self.transport.close()


class Handler:
    """aiosmtpd handler hooks for the phases it has hooks for; the session (``server``) does the work."""

    async def handle_HELO(self, server: EspSMTP, session, envelope, hostname: str):
        server.ctx.helo = hostname
        act = server.decide("ehlo")
        if act is not PASS_ACTION:
            reply = await server.enact(act, "ehlo")
            if reply is not None:
                return str(reply)
        return MISSING

    async def handle_EHLO(self, server: EspSMTP, session, envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        server.ctx.helo = hostname
        act = server.decide("ehlo")
        if act is not PASS_ACTION:
            reply = await server.enact(act, "ehlo")
            if reply is not None:
                return [str(reply)]
            if act.kind == NO_STARTTLS:
                server.no_starttls()
        return server.ehlo_lines(responses)

    async def handle_MAIL(self, server: EspSMTP, session, envelope, address: str, options: list[str]):
        ctx = server.ctx
        ctx.mail_from, ctx.rcpt, ctx.rcpts = address, None, 0
        ctx.recipients = envelope.rcpt_tos
        ctx.new_message(None, None)
        act = server.decide("mail")
        if act is not PASS_ACTION:
            reply = await server.enact(act, "mail")
            if reply is not None:
                return str(reply)
        return MISSING

    async def handle_RCPT(self, server: EspSMTP, session, envelope, address: str, options: list[str]):
        ctx = server.ctx
        if len(envelope.rcpt_tos) >= server.svc.spec.max_recipients:
            server.svc.ledger.write(
                EspReplied(
                    proto="smtp", phase="rcpt", code=TOO_MANY_RECIPIENTS.code, text=str(TOO_MANY_RECIPIENTS),
                    fault=None, session=ctx.session, id=None, peer=ctx.peer,
                )
            )  # fmt: skip
            return str(TOO_MANY_RECIPIENTS)
        ctx.rcpt, ctx.rcpts, ctx.recipients = address, len(envelope.rcpt_tos) + 1, envelope.rcpt_tos
        act = server.decide("rcpt")
        if act is not PASS_ACTION:
            reply = await server.enact(act, "rcpt")
            if reply is not None:
                return str(reply)
        return MISSING

    async def handle_DATA(self, server: EspSMTP, session, envelope) -> str:
        svc, ctx = server.svc, server.ctx
        content: bytes = envelope.original_content
        ctx.new_message(content, None)  # its header block is cut once, here, for the ids and the aims
        cid, mid, campaign = svc.ids(content, ctx.head or b"", ctx.low_head or b"", envelope.rcpt_tos)
        ctx.recipients, ctx.msg_id = envelope.rcpt_tos, cid
        act = server.decide("eod")
        ctx.new_message(None, cid)
        ctx.messages += 1
        if act is PASS_ACTION:
            svc.keep(server, envelope, content, cid, mid, campaign, acked=True)
            return _QUEUED
        # Cut off (or left hanging) after the whole message arrived: the ESP keeps it and the client
        # never learns so (RFC 5321 4.5.3.2.6's duplicate) -- unless the ESP is down (an outage).
        keeps = act.kind in (DISCONNECT, HANG) and act.fired[-1].ftype != "outage"

        def keep_unacked() -> None:
            svc.keep(server, envelope, content, cid, mid, campaign, acked=False)

        reply = await server.enact(act, "eod", msg_id=cid, before_cut=keep_unacked if keeps else None)
        if reply is not None:
            return str(reply)
        # Accepted; with a queue action into the backlog, delivered later.
        hold = act if act.kind == QUEUE else None
        svc.keep(server, envelope, content, cid, mid, campaign, acked=True, hold=hold)
        return _QUEUED
