"""HttpApiServer: every registered ESP API (``ESP_APIS``, mailstorm.fake_esp.http.api) on one aiohttp
listener, behind the fault engine.

One request is one step of phase ``http``: the API parses it (a bad request gets that ESP's 4xx, never a
500), its key is checked against the ESP's credentials when it has some (mailstorm.fake_esp.auth: an
unknown key gets the profile's auth_failure in that ESP's shape, 401 or SES's 403, before any fault),
then the engine decides (throttle per API key, latency, replies, cuts, outage), then the answer:

    pass / delay   accepted: one esp.accepted ledger record per message (proto "http", api, esp_id),
                   written before the success answer is sent, then the accepted hooks told (the
                   worker's message store for GET /messages, the webhooks when configured)
    reply          an error in that ESP's shape: a fault that ``limits_rate`` (throttle, concurrency,
                   message_cap) gives 429 with the ESP's rate-limit headers and Retry-After; otherwise
                   the fault's reply code is the HTTP status when it is one ESPs answer (400, 401, 403,
                   404, 413, 422, 429, 500, 502, 503, 504), else a transient SMTP code (4yz) maps to 503
                   and a permanent one to 400
    disconnect     the connection is reset (RST) without an answer; an outage in refuse mode too
    hang           no answer until the outage ends (the client times out), then the connection is cut
    tarpit         the normal (or the fault's) answer written one byte per ``byte_delay_s``

Recipients on the ESP's suppression list get its answer at send where it has one
(mailstorm.fake_esp.http.suppressed: Postmark and MailerSend take them out and refuse a send left with no
one, Mandrill names them "rejected"); the other ESPs accept and post their dropped events.

An outage that takes the HTTP APIs down (``on`` names http, the default) is followed by an OutageWatch
(mailstorm.fake_esp.outage_watch) as the SMTP listener's is: in refuse mode the listening socket closes
(new connections are refused by the kernel) and every open connection, kept-alive ones included, is
reset (an esp.replied cut record each, naming the outage); it listens again on the same port at the end.
In hang mode the listener stays open and every request hangs (above).

The ledger's ``key`` is the key's *name* (the credential's user, or a fingerprint of a key that is a
secret), never the key. With an ``ssl_context`` the listener is https (``--tls``: the ESP's certificate).

It shares the SMTP server's engine, ledger writer and counters when started beside it (same event loop),
so one throttle fault with phase [data, http] and one ledger cover both protocols.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from aiohttp import web

from mailstorm.correlation import Correlation, carried_id
from mailstorm.fake_esp.auth import Credentials
from mailstorm.fake_esp.deliveries import Deliveries
from mailstorm.fake_esp.engine import Engine, Outage
from mailstorm.fake_esp.faults.base import (
    DISCONNECT,
    FAULTS,
    HANG,
    QUEUE,
    REPLY,
    TARPIT,
    Action,
    Context,
    ended_record,
)
from mailstorm.fake_esp.faults.quota import QuotaFault, window_of
from mailstorm.fake_esp.http.api import ESP_APIS, QUEUED, BadRequest, EspApi, RateInfo, Submission
from mailstorm.fake_esp.http.suppressed import at_send
from mailstorm.fake_esp.outage_watch import OutageWatch
from mailstorm.fake_esp.profiles import Profile, load_profile
from mailstorm.fake_esp.webhooks.suppression import Suppressions
from mailstorm.ledger import (
    CORRELATION_HEADER,
    SHA_HEX_DIGITS,
    EspAccepted,
    EspFault,
    EspReplied,
    LedgerWriter,
)

log = logging.getLogger("mailstorm.fake_esp.http")

# Statuses ESP APIs answer with; a fault reply with one of these codes is sent as that HTTP status.
HTTP_ERROR_STATUSES = frozenset({400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504})
HANG_MAX_S = 3600.0  # a hang without an outage end still ends: nothing in mailstorm waits forever
DEFAULT_MAX_BODY = 64 * 1024 * 1024  # above the largest ESP limit (SES: 40 MB) so the ESP's 4xx is seen


def http_status(reply_code: int, ftype: str | None) -> int:
    """The HTTP status a fault reply becomes (see the module docstring)."""
    fault = FAULTS.get(ftype) if ftype is not None else None
    if fault is not None and fault.limits_rate:  # throttle, concurrency, message_cap
        return 429
    if reply_code in HTTP_ERROR_STATUSES:
        return reply_code
    return 503 if reply_code < 500 else 400


class HttpApiServer:
    """The ESP APIs on ``host:port``; ``start()`` binds (port 0 = any free one), ``stop()`` closes."""

    def __init__(
        self,
        engine: Engine,
        ledger: LedgerWriter,
        *,
        profile: Profile | None = None,
        correlation_header: str = CORRELATION_HEADER,
        correlation: Correlation = "header",
        max_message_size: int | None = None,
        counters: Any = None,
        on_accepted: Callable[[dict[str, Any]], None] | None = None,
        apis: Iterable[str] | None = None,
        credentials: Credentials | None = None,
        suppressions: Suppressions | None = None,
    ) -> None:
        self.engine = engine
        self.suppressions = suppressions
        self.credentials = credentials or Credentials()
        self.ledger = ledger
        self.profile = profile
        self.correlation = correlation
        self.max_message_size = max_message_size or (profile.limits.max_message_size if profile else None)
        self.counters = counters
        self.on_accepted = on_accepted
        self.apis: dict[str, EspApi] = {
            name: ESP_APIS[name](correlation_header) for name in (apis or ESP_APIS)
        }
        self.deliveries = Deliveries(ledger)  # messages accepted into the backlog (a queue action)
        self._seq = itertools.count(1)
        self._prefix = f"h{os.getpid()}-"
        self._open = 0
        self.app = web.Application(client_max_size=max(DEFAULT_MAX_BODY, (self.max_message_size or 0) * 2))
        for api in self.apis.values():
            for method, path in api.routes:
                self.app.router.add_route(method, path, self._handler(api))
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._bind: tuple[str, bool] = ("127.0.0.1", False)
        self._ssl: ssl.SSLContext | None = None
        self.watch = OutageWatch(engine, "http", ledger, close=self._go_down, reopen=self._reopen)
        self.port: int | None = None

    async def start(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        reuse_port: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> int:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        # reuse_port: N worker processes share the port, as their SMTP listeners do (SO_REUSEPORT).
        self._bind = (host, reuse_port)
        self._ssl = ssl_context
        self.port = port
        await self._listen()
        self.watch.start()
        return self.port

    async def _listen(self) -> None:
        """Listen on ``self.port`` (0 the first time: any free one, kept for a reopen after an outage)."""
        assert self._runner is not None and self._runner.server is not None
        host, reuse_port = self._bind
        self._listener = await asyncio.get_running_loop().create_server(
            self._runner.server,
            host,
            self.port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
            ssl=self._ssl,
        )
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.watch.stop()
        self.deliveries.close()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _go_down(self, outage: Outage) -> None:
        """A refuse outage begins: stop accepting, reset every open connection (a cut record each)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else []:
            transport = handler.transport
            if transport is None or transport.is_closing():
                continue
            peer = transport.get_extra_info("peername")
            self._cut(None, None, peer[0] if peer else "", outage.fault, None, "refuse")
            _abort(transport)

    async def _reopen(self) -> None:
        if self._listener is None and self._runner is not None:
            await self._listen()

    def _refusing(self) -> bool:
        return self.watch.outage is not None and self.watch.outage.mode == "refuse"

    # -- one request -------------------------------------------------------------------------------
    def _handler(self, api: EspApi):
        shared = self.engine.shared  # with N workers, the requests in flight are counted for the ESP

        async def handle(request: web.Request) -> web.StreamResponse:
            self._open += 1
            if shared is not None:
                shared.request_opened()
            try:
                return await self._handle(api, request)
            finally:
                self._open -= 1
                if shared is not None:
                    shared.request_closed()

        return handle

    async def _handle(self, api: EspApi, request: web.Request) -> web.StreamResponse:
        session = f"{self._prefix}{next(self._seq)}"
        peer = request.remote or ""
        try:
            sub = await api.parse(request)
        except BadRequest as bad:
            return self._refuse(api, session, peer, bad.response, bad.reason, None, None)
        except Exception as exc:  # a parser bug must still answer the client's input as a 400, not a 500
            log.exception("%s: request parse failed", api.name)
            resp = api.error(400, f"Bad Request: {type(exc).__name__}")
            return self._refuse(api, session, peer, resp, f"parse error: {exc}", None, None)
        ids = await self._ids(request, sub)
        corr = ids[0] if ids else None
        known, key_name = self.credentials.http(sub.key, sub.secret, key_is_secret=api.key_is_secret)
        if not known:
            denied = load_profile(api.name).http.auth_failure
            resp = api.unauthorized(sub, denied.status, denied.message, denied.code)
            return self._refuse(api, session, peer, resp, "unknown API key", None, corr, key=key_name)
        sub = replace(sub, key=key_name)  # from here on (throttle key, ledger) the name, never the key
        ctx = Context(
            phase="http",
            session=session,
            peer=peer,
            mail_from=sub.messages[0].sender if sub.messages else None,
            rcpts=sum(len(m.rcpts) for m in sub.messages),
            api_key=sub.key,
            auth_user=sub.key,  # an API key's name is the ESP's user (the ledger's key)
            recipients=[r for m in sub.messages for r in m.rcpts],
            headers=tuple(h for m in sub.messages for h in m.headers),
            msg_id=corr,
            open_sessions=self._open if self.engine.shared is None else self.engine.shared.open_requests,
            extra={"api": api.name, "path": request.path},
        )
        action = self.engine.decide("http", ctx)
        for f in action.fired:
            self.ledger.write(
                EspFault(
                    fault=f.fault,
                    ftype=f.ftype,
                    phase="http",
                    action=f.action,
                    delay_s=f.delay_s,
                    session=session,
                    proto="http",
                    api=api.name,
                )
            )
            if f.ended:
                self.ledger.write(ended_record(f, "http", session))
        if action.delay_s > 0:
            await asyncio.sleep(action.delay_s)
            if self._refusing():  # the ESP went down while the request waited: it is gone with it
                outage = self.watch.outage
                self._cut(api, session, peer, outage.fault if outage else None, corr, "refuse")
                _reset(request)
                return web.Response(status=204)
        if action.kind == REPLY and action.reply is not None:
            resp = self._fault_answer(api, action)
            return self._refuse(api, session, peer, resp, action.reply.text, action.fault, corr)
        if action.kind == DISCONNECT:
            self._cut(api, session, peer, action.fault, corr, "reset")
            _reset(request)
            return web.Response(status=204)  # never reaches the client: the transport is gone
        if action.kind == HANG:
            self._cut(api, session, peer, action.fault, corr, "hang")
            outage = self.engine.outage("http")
            wait = (outage.until - time.time()) if outage is not None else HANG_MAX_S
            await asyncio.sleep(max(0.0, min(wait, HANG_MAX_S)))
            _reset(request)
            return web.Response(status=204)
        too_big = self._oversize(api, sub)
        if too_big is not None:
            return self._refuse(api, session, peer, too_big, "message too large", None, corr)
        if self.suppressions is not None:  # recipients the ESP suppressed: its answer at send, if any
            kept = at_send(api, sub, self.suppressions, self.ledger)
            if isinstance(kept, dict):
                resp = api.suppressed(sub, kept)
                return self._refuse(api, session, peer, resp, "every recipient suppressed", None, corr)
            sub = kept
        if action.kind == QUEUE:  # into the backlog: the API says so ("queued") where it has the word
            sub = replace(sub, extra={**sub.extra, QUEUED: action.fired[-1].ftype})
        resp = self._accept(api, request, sub, ids, session, peer, action)
        if action.kind == TARPIT:
            if action.reply is not None:
                resp = self._fault_answer(api, action)
            return await _slow_write(request, resp, action.byte_delay_s)
        return resp

    def _fault_answer(self, api: EspApi, action: Action) -> web.Response:
        assert action.reply is not None
        ftype = next((f.ftype for f in action.fired if f.fault == action.fault), None)
        status = http_status(action.reply.code, ftype)
        http = load_profile(api.name).http  # the ESP's own codes for throttle / outage / auth
        code = {429: http.throttle.code, 503: http.outage.code}
        code[http.auth_failure.status] = http.auth_failure.code
        rate = self._rate_info(action.fault) if status == 429 else None
        return api.error(status, action.reply.text or "error", code=code.get(status), rate=rate)

    def _rate_info(self, fault_id: str | None) -> RateInfo:
        spec = (self.engine.get(fault_id) or {}).get("spec", {}) if fault_id else {}
        floor = (self.profile.http.retry_after_s if self.profile else 1) or 1
        now = time.time()
        if spec.get("type") == "quota":  # a fixed window: its limit, and it resets when the next begins
            window_s = QuotaFault.model_validate(spec).window_s
            reset = (window_of(now, window_s) + 1) * window_s
            wait = max(1, math.ceil(reset - now))
            return RateInfo(limit=spec["limit"], remaining=0, reset=math.ceil(reset), retry_after_s=wait)
        rate = float(spec.get("rate") or 1.0)
        burst = int(spec.get("burst") or max(1, round(rate)))
        wait = max(1, math.ceil(1.0 / rate))
        floor = (self.profile.http.retry_after_s if self.profile else 1) or 1
        reset = int(now) + wait
        return RateInfo(
            limit=burst, remaining=0, reset=reset, retry_after_s=max(wait, floor), window_s=burst / rate
        )

    def _oversize(self, api: EspApi, sub: Submission) -> web.Response | None:
        if self.max_message_size is None or all(m.size <= self.max_message_size for m in sub.messages):
            return None
        over = load_profile(api.name).http.oversize
        return api.error(over.status, over.message, code=over.code)

    async def _ids(self, request: web.Request, sub: Submission) -> list[str | None]:
        """Each message's correlation id: from the carrier the spec names, else what the API found (the
        header, or a field the API lets a sender attach). A body token is looked for in the request as
        sent (JSON, form fields): a base64 raw MIME (SES Raw) hides it."""
        if self.correlation == "header":
            return [m.id for m in sub.messages]
        body = await request.read() if self.correlation == "body" else b""
        return [carried_id(self.correlation, m.rcpts, body) or m.id for m in sub.messages]

    def _accept(
        self,
        api: EspApi,
        request: web.Request,
        sub: Submission,
        ids: list[str | None],
        session: str,
        peer: str,
        action: Action,
    ):
        esp_ids = api.message_ids(sub)
        for m, cid, esp_id in zip(sub.messages, ids, esp_ids, strict=True):
            if not m.rcpts:  # every recipient suppressed (http/suppressed.py): the ESP did not take it
                continue
            # Written before the answer leaves (ledger durability rule).
            self.ledger.write(
                EspAccepted(
                    id=cid,
                    mid=m.mid,
                    size=m.size,
                    rcpts=len(m.rcpts),
                    sha=m.sha[:SHA_HEX_DIGITS],  # the body file and GET /messages keep it whole
                    proto="http",
                    api=api.name,
                    peer=peer,
                    session=session,
                    key=sub.key,
                    acked=True,
                    esp_id=esp_id,
                    held=action.kind == QUEUE,
                    to=list(m.rcpts),
                    campaign=m.campaign,
                )
            )
        notify = self._notifier(api, sub, ids, esp_ids)
        if action.kind == QUEUE:  # held in the backlog: the hooks (webhooks) hear of it when it leaves
            held = list(zip(ids, esp_ids, strict=True))
            fault = action.fault or ""
            self.deliveries.hold(
                held, proto="http", api=api.name, fault=fault, hold_s=action.hold_s, then=notify
            )
        else:
            notify()
        resp = api.accepted(request, sub, esp_ids)
        if self.counters is not None:
            self.counters.accepted += len(esp_ids)
            self.counters.replies[f"http-{resp.status}"] += 1  # apart from SMTP codes
        return resp

    def _notifier(
        self, api: EspApi, sub: Submission, ids: list[str | None], esp_ids: list[str]
    ) -> Callable[[], None]:
        """Tells ``on_accepted`` (the webhook poster) of each message of ``sub``, when called."""

        def notify() -> None:
            if self.on_accepted is None:
                return
            for m, cid, esp_id in zip(sub.messages, ids, esp_ids, strict=True):
                kept = {
                    "id": cid,
                    "mid": m.mid,
                    "api": api.name,
                    "esp_id": esp_id,
                    "proto": "http",
                    "echo": m.echo,
                }
                kept |= {"sender": m.sender, "to": list(m.rcpts), "size": m.size, "sha": m.sha}
                self.on_accepted(kept)

        return notify

    def _refuse(
        self,
        api: EspApi,
        session: str,
        peer: str,
        resp: web.Response,
        text: str,
        fault: str | None,
        corr: str | None,
        key: str | None = None,
    ) -> web.Response:
        self.ledger.write(
            EspReplied(
                proto="http",
                api=api.name,
                phase="http",
                code=resp.status,
                text=text,
                fault=fault,
                session=session,
                id=corr,
                peer=peer,
                key=key,
            )
        )
        if self.counters is not None:
            self.counters.replies[f"http-{resp.status}"] += 1  # apart from SMTP codes
        return resp

    def _cut(
        self,
        api: EspApi | None,
        session: str | None,
        peer: str,
        fault: str | None,
        corr: str | None,
        how: str,
    ) -> None:
        self.ledger.write(
            EspReplied(
                proto="http",
                api=api.name if api is not None else None,
                phase="http",
                code=None,
                text=how,
                fault=fault,
                session=session,
                id=corr,
                peer=peer,
            )
        )
        if self.counters is not None:
            self.counters.cut += 1


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST (SO_LINGER 0), as a crashed or overloaded ESP's socket does."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    _abort(transport)


def _abort(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def _slow_write(request: web.Request, resp: web.Response, byte_delay_s: float) -> web.StreamResponse:
    """Send ``resp`` one body byte at a time (a tarpit), headers first."""
    body = resp.body if isinstance(resp.body, bytes) else b""
    out = web.StreamResponse(status=resp.status, headers=resp.headers)
    out.content_length = len(body)
    await out.prepare(request)
    for i in range(len(body)):
        await out.write(body[i : i + 1])
        await asyncio.sleep(byte_delay_s)
    await out.write_eof()
    return out
