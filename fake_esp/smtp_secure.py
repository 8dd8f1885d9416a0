"""What a fake ESP session requires before it takes mail, as production ESPs do: TLS (STARTTLS or
implicit, ``require_tls``, the tls faults) and AUTH (credentials, the phase ``auth``).

A mixin of ``mailstorm.fake_esp.smtp.EspSMTP`` (it uses the session's ``svc``, ``ctx``, ``decide``,
``enact``, ``push`` and ``abort``), kept apart so the session module keeps to the SMTP phases.

The gate is MAIL (nothing is sent before it): with ``require_tls`` a MAIL or AUTH before STARTTLS gets
the profile's 530 "Must issue a STARTTLS command first" (RFC 3207 4), and EHLO hides AUTH until then;
with credentials, a MAIL before a successful AUTH gets the profile's 530 "Authentication required" (RFC
4954 6) and a wrong password its 535. AUTH (PLAIN, LOGIN) asks the phase ``auth`` first, so a fault can
answer 535 or 454 there.

STARTTLS (``--tls starttls``) is aiosmtpd's, with the phase ``tls`` asked first: a tls fault may refuse
it (454), answer the client's ClientHello with a handshake_failure alert, or hand over the expired or
wrong-host certificate. Implicit TLS (``--tls implicit``) does not use ``create_server(ssl=...)``: the
listener is plain TCP and each connection's first ``connection_made`` asks the phase ``tls`` and then
puts asyncio's SSLProtocol under the session itself, with the certificate the engine chose (a server-wide
ssl context cannot pick one per connection). The SMTP session starts (banner, phase ``connect``) when
the handshake completes. There, at phase ``tls``, only the tls faults, a disconnect and a hang act: a
latency or a reply is recorded and otherwise has nothing to delay or answer yet (phase ``connect`` has).

Ledger: every refusal above is an ``esp.replied`` (phase ``mail``, ``auth`` or ``tls``; a 535 carries
``user``: the name of the login tried, never the password); a handshake that fails (the client refused
the certificate, spoke something else, or left) is an ``esp.replied`` with phase ``tls``, code null
and the reason as text; a handshake_failure alert and a cut mid-DATA are ``esp.replied`` cuts; every
fault that acted is an ``esp.fault`` as at any phase.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any

from aiosmtpd.smtp import AuthResult, Session, TLSSetupException

from mailstorm.fake_esp.faults.base import DISCONNECT, HANG, PASS_ACTION, Action
from mailstorm.fake_esp.faults.tls import (
    EXPIRED_CERT,
    HANDSHAKE_FAILURE,
    NO_STARTTLS,
    WRONG_HOST,
)
from mailstorm.fake_esp.tls import HANDSHAKE_FAILURE_ALERT
from mailstorm.ledger import EspFault, EspReplied
from mailstorm.replies import (
    BAD_SEQUENCE,
    DATA_GO_AHEAD,
    READY_FOR_TLS,
    TLS_NOT_AVAILABLE,
    Reply,
)

HANDSHAKE_TIMEOUT_S = 30.0  # a client that opens a TLS connection and never finishes the handshake


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    """aiosmtpd's authenticator (PLAIN and LOGIN give a LoginPassword): the session checks it."""
    return server.check_login(auth_data)


class _Session(Session):
    """aiosmtpd's session, minus the warning it logs on every AUTH: aiosmtpd 1.4 itself sets the
    deprecated ``login_data``, whose setter logs "deprecated" (a log line per login, under load)."""

    login_data = property(
        lambda self: self._login_data, lambda self, value: setattr(self, "_login_data", value)
    )


class SecureSession:
    """TLS and AUTH for one session (mixed into EspSMTP)."""

    svc: Any
    ctx: Any
    session: Any
    loop: Any
    _tls_protocol: Any
    _original_transport: Any
    tls_context: ssl.SSLContext | None

    def _init_secure(self) -> None:
        self.tls_version: str | None = None  # "TLSv1.3" once the session is encrypted (the ledger's tls)
        self._opened = False
        self._no_starttls = False  # a no_starttls fault fired at EHLO: STARTTLS stays refused
        self._implicit: sslproto.SSLProtocol | None = None  # the handshake under an implicit-TLS session
        self._raw: asyncio.BaseTransport | None = None
        self._tls_fault: str | None = None

    @property
    def secure(self) -> bool:
        return self._tls_protocol is not None

    # -- connection_made: the implicit handshake --------------------------------------------------------
    def _begin_implicit(self, transport: asyncio.Transport) -> bool:
        """Start the TLS handshake of a new implicit-TLS connection (or what a fault wants instead);
        False when the session is to speak plain SMTP now (a no_starttls fault)."""
        self._raw = transport  # what an outage cuts before the session has a transport of its own
        act = self.decide("tls")  # type: ignore[attr-defined]
        self._write_fired(act, "tls")
        kind = act.kind
        if kind == NO_STARTTLS:
            return False
        if kind == DISCONNECT:
            self._record_cut("tls", act.fault, None)  # type: ignore[attr-defined]
            transport.abort()
            return True
        if kind in (HANDSHAKE_FAILURE, HANG):
            transport.set_protocol(_NoHandshake(self, transport, act, kind == HANG))
            return True
        contexts = self.svc.tls
        ctx = {EXPIRED_CERT: contexts.expired, WRONG_HOST: contexts.wrong_host}.get(kind, contexts.good)
        self._tls_fault = act.fault if kind in (EXPIRED_CERT, WRONG_HOST) else None
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        proto = sslproto.SSLProtocol(
            loop, self, ctx, waiter, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S
        )  # type: ignore[arg-type]
        self._implicit = proto
        transport.set_protocol(proto)
        proto.connection_made(transport)
        waiter.add_done_callback(self._implicit_done)
        return True

    def _implicit_done(self, waiter: asyncio.Future[None]) -> None:
        if self.secure:
            return  # the session started (connection_made ran before the waiter was woken)
        exc = None if waiter.cancelled() else waiter.exception()
        self._record_tls_failure(exc)
        self._session_gone()

    def _after_connection_made(self, transport: asyncio.BaseTransport) -> None:
        """After aiosmtpd's connection_made: mark an implicit-TLS session as encrypted (so aiosmtpd offers
        no STARTTLS and closes the raw transport at the end) and note the TLS version."""
        if self._implicit is not None and self._tls_protocol is None:
            self._tls_protocol = self._implicit
            self._original_transport = self._raw
            self.session.ssl = {"implicit": True}  # type: ignore[attr-defined]
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.tls_version = ssl_object.version()

    def _create_session(self) -> Session:
        return _Session(self.loop)

    # -- the gate: MAIL, and AUTH --------------------------------------------------------------------
    async def smtp_MAIL(self, arg: str) -> None:
        if self.svc.spec.require_tls and not self.secure:
            await self.refuse("mail", self.svc.tls_required)
        elif self.svc.credentials.required and not self.session.authenticated:
            await self.refuse("mail", self.svc.auth_required)
        else:
            await super().smtp_MAIL(arg)  # type: ignore[misc]

    async def refuse(self, phase: str, reply: Reply, fault: str | None = None) -> None:
        """Answer ``reply`` with its esp.replied record first."""
        self.svc.ledger.write(
            EspReplied(
                proto="smtp", phase=phase, code=reply.code, text=str(reply), fault=fault,
                session=self.ctx.session, id=None, peer=self.ctx.peer,
            )
        )  # fmt: skip
        await self.push(str(reply))  # type: ignore[attr-defined]

    async def smtp_AUTH(self, arg: str) -> None:
        if self.svc.spec.require_tls and not self.secure:
            await self.refuse("auth", self.svc.tls_required)  # SES answers AUTH so before STARTTLS
            return
        act = self.decide("auth")  # type: ignore[attr-defined]
        if act is not PASS_ACTION:
            reply = await self.enact(act, "auth")  # type: ignore[attr-defined]
            if reply is not None:
                await self.push(str(reply))  # type: ignore[attr-defined]
                return
        # A line too long inside the exchange is answered by EspSMTP.challenge_auth (500 5.5.6).
        await super().smtp_AUTH(arg)  # type: ignore[misc]

    def check_login(self, auth_data: Any) -> AuthResult:
        """The credentials of an AUTH exchange: accepted (the session's key becomes the credential's
        name) or refused with the profile's 535, its esp.replied record written first."""
        login = getattr(auth_data, "login", None)
        password = getattr(auth_data, "password", None)
        if not isinstance(login, bytes) or not isinstance(password, bytes):
            return AuthResult(success=False, handled=False, message=str(self.svc.auth_failed))
        credentials = self.svc.credentials
        try:
            ok, name = credentials.smtp(login.decode(), password.decode())
        except UnicodeDecodeError:  # no credential is such bytes (an open ESP takes them all the same)
            ok, name = not credentials.required, login.decode("utf-8", "replace")
        if ok:
            self.ctx.auth_user = name
            return AuthResult(success=True, auth_data=auth_data)
        reply = self.svc.auth_failed
        self.svc.ledger.write(
            EspReplied(
                proto="smtp", phase="auth", code=reply.code, text=str(reply), fault=None,
                session=self.ctx.session, id=None, peer=self.ctx.peer, user=name,
            )
        )  # fmt: skip
        return AuthResult(success=False, handled=False, message=str(reply))

    # -- EHLO and STARTTLS ------------------------------------------------------------------------------
    def ehlo_lines(self, responses: list[str]) -> list[str]:
        """The EHLO answer as this session may advertise it: no STARTTLS after a no_starttls fault, no
        AUTH before STARTTLS when TLS is required (RFC 3207 4.2: nothing that needs TLS before it)."""
        hide_auth = self.svc.spec.require_tls and not self.secure
        return [
            r
            for r in responses
            if not (r.startswith("250-STARTTLS") and self._no_starttls)
            and not (r.startswith("250-AUTH") and hide_auth)
        ]

    def no_starttls(self) -> None:
        self._no_starttls = True

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg or self.tls_context is None:
            await super().smtp_STARTTLS(arg)  # type: ignore[misc]  # 501 syntax / 454 TLS not available
            return
        if self.secure:
            await self.push(str(BAD_SEQUENCE))  # type: ignore[attr-defined]  # TLS already on
            return
        if self._no_starttls:
            await self.refuse("tls", TLS_NOT_AVAILABLE)  # type: ignore[attr-defined]
            return
        act = self.decide("tls")  # type: ignore[attr-defined]
        if act is not PASS_ACTION:
            reply = await self.enact(act, "tls")  # type: ignore[attr-defined]
            if reply is not None:
                await self.push(str(reply))  # type: ignore[attr-defined]
                return
            if act.kind == NO_STARTTLS:
                self._no_starttls = True
                await self.refuse("tls", TLS_NOT_AVAILABLE, fault=act.fault)  # type: ignore[attr-defined]
                return
            if act.kind == HANDSHAKE_FAILURE:
                await self.push(str(READY_FOR_TLS))  # type: ignore[attr-defined]
                await self._fail_handshake(act)
                return
            if act.kind in (EXPIRED_CERT, WRONG_HOST):
                contexts = self.svc.tls
                self.tls_context = contexts.expired if act.kind == EXPIRED_CERT else contexts.wrong_host
                self._tls_fault = act.fault
        self._discard_pipelined()
        await super().smtp_STARTTLS(arg)  # type: ignore[misc]

    def _discard_pipelined(self) -> None:
        """Drop what the client sent after STARTTLS, before the negotiation (RFC 3207 4.2: the server
        discards it). aiosmtpd drops it only once the handshake succeeded; until then it sat in the
        stream reader, which pauses the socket when it holds more than its limit -- and the handshake
        then waited, the session open, for bytes the paused socket never delivered."""
        reader = self._reader  # type: ignore[attr-defined]
        reader._buffer.clear()
        reader._maybe_resume_transport()

    async def _fail_handshake(self, act: Action) -> None:
        """Read the client's ClientHello and answer it with a fatal handshake_failure alert, then close."""
        await self._reader.read(65536)  # type: ignore[attr-defined]  # the ClientHello (or the end)
        self._record_tls_cut(act.fault, "handshake_failure alert")
        if self.transport is not None:  # type: ignore[attr-defined]
            self.transport.write(HANDSHAKE_FAILURE_ALERT)  # type: ignore[attr-defined]
            self.transport.close()  # type: ignore[attr-defined]  # close() flushes the alert first
        await asyncio.get_running_loop().create_future()  # cancelled by connection_lost

    def tls_setup_failed(self, error: Exception) -> bool:
        """True when ``error`` is aiosmtpd's failed STARTTLS handshake (the client refused the
        certificate, or did not speak TLS), recorded on the ledger: aiosmtpd closes the connection next."""
        if not isinstance(error, TLSSetupException):
            return False
        self._record_tls_failure(error.__cause__)
        return True

    # -- DATA ------------------------------------------------------------------------------------------
    async def cut_mid_data(self, act: Action) -> None:
        """Answer DATA with 354, wait for the first bytes of the message, and cut the connection (over
        TLS: no close_notify, so the client must see a truncation, not an end). The message is not kept."""
        await self.enact(act, "data")  # type: ignore[attr-defined]
        await self.push(str(DATA_GO_AHEAD))  # type: ignore[attr-defined]
        await self._reader.read(1024)  # type: ignore[attr-defined]
        self._record_cut("data", act.fault, None)  # type: ignore[attr-defined]
        self.abort()  # type: ignore[attr-defined]
        await asyncio.get_running_loop().create_future()  # cancelled by connection_lost

    # -- ledger ----------------------------------------------------------------------------------------
    def _write_fired(self, act: Action, phase: str) -> None:
        for f in act.fired:
            self.svc.ledger.write(
                EspFault(
                    fault=f.fault, ftype=f.ftype, phase=phase, action=f.action, delay_s=f.delay_s,
                    session=self.ctx.session,
                )
            )  # fmt: skip

    def _record_tls_cut(self, fault: str | None, text: str) -> None:
        self.svc.ledger.write(
            EspReplied(
                proto="smtp", phase="tls", code=None, text=text, fault=fault,
                session=self.ctx.session, id=None, peer=self.ctx.peer,
            )
        )  # fmt: skip
        self.svc.counters.cut += 1

    def _record_tls_failure(self, exc: BaseException | None) -> None:
        why = str(exc) if exc is not None else "the client closed the connection"
        self.svc.ledger.write(
            EspReplied(
                proto="smtp", phase="tls", code=None, text=f"TLS handshake failed: {why}",
                fault=self._tls_fault, session=self.ctx.session, id=None, peer=self.ctx.peer,
            )
        )  # fmt: skip

    def _session_gone(self) -> None:
        """Bookkeeping of a session that ended before aiosmtpd ever started it (implicit TLS)."""
        self.svc.session_closed(self)


class _NoHandshake(asyncio.Protocol):
    """An implicit-TLS connection that gets no handshake: a handshake_failure alert in answer to the
    ClientHello, or (hang) nothing at all until the idle timeout."""

    def __init__(self, session: SecureSession, transport: asyncio.Transport, act: Action, hang: bool) -> None:
        self.session = session
        self.transport = transport
        self.fault = act.fault
        self.hang = hang
        self._timer = None
        if hang:  # the engine's esp.fault record says so; no reply, no cut to record
            self._timer = asyncio.get_running_loop().call_later(
                session.svc.spec.idle_timeout, transport.abort
            )

    def data_received(self, data: bytes) -> None:
        if self.hang or self.transport.is_closing():
            return
        self.session._record_tls_cut(self.fault, "handshake_failure alert")
        self.transport.write(HANDSHAKE_FAILURE_ALERT)
        self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.session._session_gone()
