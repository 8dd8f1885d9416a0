"""HttpApiServer: every registered ESP API (mailstorm.fake_esp.apis) on one aiohttp listener, behind the
fault engine.

One request is one step of phase ``http``: the API parses it (a bad request gets that ESP's 4xx, never a
500), its key is checked against the ESP's credentials when it has some (mailstorm.fake_esp.auth: an
unknown key gets the profile's auth_failure in that ESP's shape, 401 or SES's 403, before any fault),
then the engine decides (throttle per API key, latency, replies, cuts, outage), then the answer:

    pass / delay   accepted: one esp.accepted ledger record per message (proto "http", api, esp_id),
                   written before the success answer is sent, and the webhooks (if configured) told
    reply          an error in that ESP's shape: a throttle/concurrency/message_cap fault gives 429 with
                   the ESP's rate-limit headers and Retry-After; otherwise the fault's reply code is the
                   HTTP status when it is one ESPs answer (400, 401, 403, 404, 413, 422, 429, 500, 502,
                   503, 504), else a transient SMTP code (4yz) maps to 503 and a permanent one to 400
    disconnect     the connection is reset (RST) without an answer; an outage in refuse mode too
    hang           no answer until the outage ends (the client times out), then the connection is cut
    tarpit         the normal (or the fault's) answer written one byte per ``byte_delay_s``

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

from mailstorm.fake_esp.apis import API_REGISTRY, BadRequest, EspApi, RateInfo, Submission
from mailstorm.fake_esp.auth import Credentials
from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.faults.base import DISCONNECT, HANG, REPLY, TARPIT, Action, Context
from mailstorm.fake_esp.profiles import Profile, load_profile
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerWriter

log = logging.getLogger("mailstorm.fake_esp.http")

# Statuses ESP APIs answer with; a fault reply with one of these codes is sent as that HTTP status.
HTTP_ERROR_STATUSES = frozenset({400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504})
RATE_FAULTS = frozenset({"throttle", "concurrency", "message_cap"})
HANG_MAX_S = 3600.0  # a hang without an outage end still ends: nothing in mailstorm waits forever
DEFAULT_MAX_BODY = 64 * 1024 * 1024  # above the largest ESP limit (SES: 40 MB) so the ESP's 4xx is seen


def http_status(reply_code: int, ftype: str | None) -> int:
    """The HTTP status a fault reply becomes (see the module docstring)."""
    if ftype in RATE_FAULTS:
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
        max_message_size: int | None = None,
        counters: Any = None,
        on_accepted: Callable[[dict[str, Any]], None] | None = None,
        apis: Iterable[str] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self.engine = engine
        self.credentials = credentials or Credentials()
        self.ledger = ledger
        self.profile = profile
        self.max_message_size = max_message_size or (profile.limits.max_message_size if profile else None)
        self.counters = counters
        self.on_accepted = on_accepted
        self.apis: dict[str, EspApi] = {
            name: API_REGISTRY[name](correlation_header) for name in (apis or API_REGISTRY)
        }
        self._seq = itertools.count(1)
        self._prefix = f"h{os.getpid()}-"
        self._open = 0
        self.app = web.Application(client_max_size=max(DEFAULT_MAX_BODY, (self.max_message_size or 0) * 2))
        for api in self.apis.values():
            for method, path in api.routes:
                self.app.router.add_route(method, path, self._handler(api))
        self._runner: web.AppRunner | None = None
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
        site = web.TCPSite(
            self._runner,
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            ssl_context=ssl_context,
        )
        await site.start()
        sockets = site._server.sockets if site._server is not None else []  # type: ignore[union-attr]
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- one request -------------------------------------------------------------------------------
    def _handler(self, api: EspApi):
        async def handle(request: web.Request) -> web.StreamResponse:
            self._open += 1
            try:
                return await self._handle(api, request)
            finally:
                self._open -= 1

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
        corr = sub.messages[0].id if sub.messages else None
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
            open_sessions=self._open,
            extra={"api": api.name, "path": request.path},
        )
        action = self.engine.decide("http", ctx)
        for f in action.fired:
            self.ledger.write(
                Kind.ESP_FAULT,
                fault=f.fault,
                ftype=f.ftype,
                phase="http",
                action=f.action,
                delay_s=f.delay_s,
                session=session,
                proto="http",
                api=api.name,
            )
        if action.delay_s > 0:
            await asyncio.sleep(action.delay_s)
        if action.kind == REPLY and action.reply is not None:
            resp = self._fault_answer(api, action)
            return self._refuse(api, session, peer, resp, action.reply.text, action.fault, corr)
        if action.kind == DISCONNECT:
            self._cut(api, session, peer, action.fault, corr, "reset")
            _reset(request)
            return web.Response(status=204)  # never reaches the client: the transport is gone
        if action.kind == HANG:
            self._cut(api, session, peer, action.fault, corr, "hang")
            outage = self.engine.outage()
            wait = (outage.until - time.time()) if outage is not None else HANG_MAX_S
            await asyncio.sleep(max(0.0, min(wait, HANG_MAX_S)))
            _reset(request)
            return web.Response(status=204)
        too_big = self._oversize(api, sub)
        if too_big is not None:
            return self._refuse(api, session, peer, too_big, "message too large", None, corr)
        resp = self._accept(api, request, sub, session, peer)
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
        rate = float(spec.get("rate") or 1.0)
        burst = int(spec.get("burst") or max(1, round(rate)))
        wait = max(1, math.ceil(1.0 / rate))
        floor = (self.profile.http.retry_after_s if self.profile else 1) or 1
        reset = int(time.time()) + wait
        return RateInfo(limit=burst, remaining=0, reset=reset, retry_after_s=max(wait, floor))

    def _oversize(self, api: EspApi, sub: Submission) -> web.Response | None:
        if self.max_message_size is None or all(m.size <= self.max_message_size for m in sub.messages):
            return None
        over = load_profile(api.name).http.oversize
        return api.error(over.status, over.message, code=over.code)

    def _accept(self, api: EspApi, request: web.Request, sub: Submission, session: str, peer: str):
        esp_ids = [api.new_message_id() for _ in sub.messages]
        for m, esp_id in zip(sub.messages, esp_ids, strict=True):
            rec = {
                "id": m.id,
                "mid": m.mid,
                "size": m.size,
                "rcpts": len(m.rcpts),
                "sha": m.sha,
                "proto": "http",
                "api": api.name,
                "peer": peer,
                "session": session,
                "key": sub.key,
                "acked": True,
                "esp_id": esp_id,
            }
            # Written before the answer leaves (ledger durability rule); the webhook poster reads it too.
            self.ledger.write(Kind.ESP_ACCEPTED, **rec)
            if self.on_accepted is not None:
                self.on_accepted({**rec, "sender": m.sender, "to": list(m.rcpts)})
        resp = api.accepted(request, sub, esp_ids)
        if self.counters is not None:
            self.counters.accepted += len(esp_ids)
            self.counters.replies[f"http-{resp.status}"] += 1  # apart from SMTP codes
        return resp

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
        extra = {"key": key} if key is not None else {}
        self.ledger.write(
            Kind.ESP_REPLIED,
            proto="http",
            api=api.name,
            phase="http",
            code=resp.status,
            text=text,
            fault=fault,
            session=session,
            id=corr,
            peer=peer,
            **extra,
        )
        if self.counters is not None:
            self.counters.replies[f"http-{resp.status}"] += 1  # apart from SMTP codes
        return resp

    def _cut(self, api: EspApi, session: str, peer: str, fault: str | None, corr: str | None, how: str):
        self.ledger.write(
            Kind.ESP_REPLIED,
            proto="http",
            api=api.name,
            phase="http",
            code=None,
            text=how,
            fault=fault,
            session=session,
            id=corr,
            peer=peer,
        )
        if self.counters is not None:
            self.counters.cut += 1


def _reset(request: web.Request) -> None:
    """Abort the connection with an RST (SO_LINGER 0), as a crashed or overloaded ESP's socket does."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
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
