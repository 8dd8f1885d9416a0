"""The control API (aiohttp, JSON): list / add / replace / remove faults, reset, health, counters, metrics.

    GET /health            {"status": "ok", "ready": bool, "workers": n, "pid": n}
    GET /faults            {"faults": [{id, spec, added_at, active_from, expires_at}, ...]}
    POST /faults           a fault spec -> 201 {id, spec, ...}; 400 {"error": "<field>: <why>"};
                           409 when a fault with that name exists (PUT replaces)
    PUT /faults/{id}       a fault spec -> 200 {id, ...} (replaces, or adds under that id)
    DELETE /faults/{id}    200 {"id": id}; 404 when unknown
    POST /reset            removes every fault and its state -> 200 {"removed": n}
    GET /counters          {sessions, open_sessions, accepted, cut, replies: {code: n}, faults: {id: n},
                           workers}
    GET /metrics           Prometheus text exposition of the same counters
    GET /messages          the latest accepted messages, newest first (mailstorm.fake_esp.messages says
                           what is kept): {total, count, offset, limit, kept, received, messages: [...]};
                           filters rcpt, sender, id (correlation id), header (``Name`` or ``Name: value``,
                           repeatable), since / until (epoch s or ISO 8601); paging offset, limit (<= 1000);
                           body=1 adds each body (with --store-bodies); min=N&timeout=S answers as soon as
                           N messages match, or after S s (<= 120) with what there is (a long poll)
    GET /messages/{id}     one message with its headers (and body with --store-bodies); 404 when unknown
    GET /messages/{id}/raw its stored body as message/rfc822 (--store-bodies); 404 when not stored
    GET /sns/...           with webhooks: the fake SNS's signing certificate and ConfirmSubscription
                           (mailstorm.fake_esp.esps.ses.sns; served without the token)
    GET /                  a read-only page of the latest messages and active faults, refreshing live
                           (no data in it; with a token, open it as /#token=<token>)

When the ESP was started with a token, every request must carry ``Authorization: Bearer <token>``
(401 otherwise; the page at / aside, which holds no data). The API works against a ``Backend``: the
engine that is the store of faults, plus how changes reach the workers and how their counters and
messages are gathered (in-process, or over pipes).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.messages import Found, Query, Received, parse_query
from mailstorm.fake_esp.spec import parse_fault


class Backend(Protocol):
    engine: Engine
    workers: int

    def ready(self) -> bool: ...

    async def changed(self, reset: bool = False) -> None:
        """The engine's faults changed (``reset``: and every fault state must be forgotten)."""
        ...

    async def counters(self) -> dict[str, Any]: ...

    async def messages(self, q: Query) -> Found: ...

    async def message(self, mid: str) -> Received | None: ...

    async def arrival(self, timeout: float) -> None:
        """Return when a message may have arrived, or after ``timeout`` s."""
        ...


LONG_POLL_MAX_S = 120.0
PAGE = Path(__file__).with_name("control_page.html")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def make_app(
    backend: Backend, token: str | None = None, bodies: Path | None = None, public: Sequence[Any] = ()
) -> web.Application:
    """The control API over ``backend``; ``bodies``: the --store-bodies directory, if any; ``public``:
    routes served without the token (the webhooks' SNS endpoints: mailstorm.fake_esp.webhooks.formats)."""
    open_paths = {"/", *(r.path for r in public)}

    @web.middleware
    async def require_token(request: web.Request, handler):
        # The page holds no data (its requests carry the token); the public routes are the ESP's own.
        if token is not None and request.path not in open_paths:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return _error(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400 or exc.content_type == "application/json":
                raise
            # aiohttp's own answers (unknown route 404, wrong method 405) in the API's JSON shape too.
            return _error(exc.status, f"{request.method} {request.path}: {exc.reason}")

    engine = backend.engine

    async def read_spec(request: web.Request):
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
            raise _bad("body: not valid JSON") from None
        try:
            return parse_fault(body)
        except ConfigError as exc:
            raise _bad(str(exc)) from None

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "ready": backend.ready(), "workers": backend.workers, "pid": os.getpid()}
        )

    async def list_faults(request: web.Request) -> web.Response:
        return web.json_response({"faults": engine.entries()})

    async def add_fault(request: web.Request) -> web.Response:
        spec = await read_spec(request)
        try:
            fid = engine.add(spec)
        except KeyError:
            return _error(
                409, f"name: a fault named {spec.name!r} exists; PUT /faults/{spec.name} replaces it"
            )
        await backend.changed()
        return web.json_response(engine.get(fid) or {"id": fid}, status=201)

    async def put_fault(request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        spec = await read_spec(request)
        if spec.name is not None and spec.name != fid:
            return _error(400, f"name: {spec.name!r} differs from the id in the path {fid!r}")
        engine.put(fid, spec)
        await backend.changed()
        return web.json_response(engine.get(fid) or {"id": fid})

    async def delete_fault(request: web.Request) -> web.Response:
        fid = request.match_info["id"]
        if not engine.remove(fid):
            return _error(404, f"no fault with id {fid!r}")
        await backend.changed()
        return web.json_response({"id": fid})

    async def reset(request: web.Request) -> web.Response:
        removed = len(engine.entries())
        engine.reset()
        await backend.changed(reset=True)
        return web.json_response({"removed": removed})

    async def counters(request: web.Request) -> web.Response:
        return web.json_response(await backend.counters())

    async def metrics(request: web.Request) -> web.Response:
        from mailstorm.fake_esp.counters import prometheus_text

        body = prometheus_text(await backend.counters())
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def body_of(m: Received) -> bytes | None:
        if bodies is None or not m.sha:
            return None
        try:
            return (bodies / f"{m.sha}.eml").read_bytes()
        except OSError:
            return None

    def with_body(m: Received, headers: bool) -> dict[str, Any]:
        out = m.as_dict(headers=headers)
        if bodies is not None:
            raw = body_of(m)
            out["body"] = None if raw is None else raw.decode("utf-8", "replace")
        return out

    async def list_messages(request: web.Request) -> web.Response:
        params = request.query
        try:
            q = parse_query(params, params.getall("header", []))
            want = int(params["min"]) if params.get("min") else 0
            wait = float(params["timeout"]) if params.get("timeout") else 10.0
        except ConfigError as exc:
            raise _bad(str(exc)) from None
        except ValueError:
            raise _bad("min, timeout: min is a whole number, timeout seconds") from None
        if want < 0 or not 0 <= wait <= LONG_POLL_MAX_S:
            raise _bad(f"min, timeout: min >= 0 and timeout between 0 and {LONG_POLL_MAX_S:g} s")
        deadline = time.monotonic() + wait
        found = await backend.messages(q)
        while found.total < want and (left := deadline - time.monotonic()) > 0:
            await backend.arrival(left)
            found = await backend.messages(q)
        page = found.messages[q.offset : q.offset + q.limit]
        if params.get("body") in ("1", "true"):  # read from disk, off the loop: up to 1,000 files
            shown = await asyncio.to_thread(lambda: [with_body(m, False) for m in page])
        else:
            shown = [m.as_dict() for m in page]
        return web.json_response(
            {
                "total": found.total,
                "count": len(page),
                "offset": q.offset,
                "limit": q.limit,
                "kept": found.kept,
                "received": found.received,
                "messages": shown,
            }
        )

    async def get_message(request: web.Request) -> web.Response:
        m = await backend.message(request.match_info["id"])
        if m is None:
            return _error(404, f"no message with id {request.match_info['id']!r} (kept: the latest only)")
        return web.json_response(await asyncio.to_thread(with_body, m, True))

    async def raw_message(request: web.Request) -> web.Response:
        m = await backend.message(request.match_info["id"])
        raw = None if m is None else await asyncio.to_thread(body_of, m)
        if raw is None:
            why = "unknown" if m is None else "its body is not stored (--store-bodies DIR keeps SMTP bodies)"
            return _error(404, f"message {request.match_info['id']!r}: {why}")
        return web.Response(body=raw, content_type="message/rfc822")

    page_html = PAGE.read_text(encoding="utf-8")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=page_html, content_type="text/html")

    app = web.Application(middlewares=[require_token], client_max_size=1024 * 1024)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/faults", list_faults),
            web.post("/faults", add_fault),
            web.put("/faults/{id}", put_fault),
            web.delete("/faults/{id}", delete_fault),
            web.post("/reset", reset),
            web.get("/counters", counters),
            web.get("/metrics", metrics),
            web.get("/messages", list_messages),
            web.get("/messages/{id}", get_message),
            web.get("/messages/{id}/raw", raw_message),
            web.get("/", page),
            *public,
        ]
    )
    return app


async def start_control(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
