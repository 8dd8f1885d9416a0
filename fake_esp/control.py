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

When the ESP was started with a token, every request must carry ``Authorization: Bearer <token>``
(401 otherwise). The API works against a ``Backend``: the engine that is the store of faults, plus how
changes reach the workers and how their counters are gathered (in-process, or over pipes).
"""

from __future__ import annotations

import hmac
import json
import os
from typing import Any, Protocol

from aiohttp import web

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.spec import parse_fault


class Backend(Protocol):
    engine: Engine
    workers: int

    def ready(self) -> bool: ...

    async def changed(self, reset: bool = False) -> None:
        """The engine's faults changed (``reset``: and every fault state must be forgotten)."""
        ...

    async def counters(self) -> dict[str, Any]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def make_app(backend: Backend, token: str | None = None) -> web.Application:
    @web.middleware
    async def require_token(request: web.Request, handler):
        if token is not None:
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
        ]
    )
    return app


async def start_control(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
