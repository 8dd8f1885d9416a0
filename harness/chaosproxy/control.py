"""The proxy's optional HTTP control surface (loopback, JSON), mirroring the function API:

GET    /health            {"ok": true, "listen": "host:port", "upstream": "host:port",
                           "paths": {path: {"listen", "upstream"}}} (listen/upstream: the first path's)
GET    /toxics            [{name, type, stream, toxicity, ...}]
POST   /toxics            body = a toxic spec; 201 {"name": ...}; 400 {"error": "...names the field..."}
DELETE /toxics/{name}     204; 404 when no such toxic
POST   /reset             removes every toxic; 204
GET    /counters          {"connections", "upstream_failed", "resets", "bytes_up", "bytes_down"}
"""

from __future__ import annotations

from aiohttp import web

from mailstorm.errors import UserError
from mailstorm.harness.chaosproxy.server import ProxyServer


def build_app(proxy: ProxyServer) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/health")
    async def health(request: web.Request) -> web.Response:
        host, port = proxy.address
        up = f"{proxy.upstream[0]}:{proxy.upstream[1]}"
        paths = {
            name: {"listen": "{}:{}".format(*proxy.address_of(name)), "upstream": f"{u[0]}:{u[1]}"}
            for name, u in proxy.upstreams.items()
        }
        return web.json_response({"ok": True, "listen": f"{host}:{port}", "upstream": up, "paths": paths})

    @routes.get("/toxics")
    async def list_toxics(request: web.Request) -> web.Response:
        return web.json_response(proxy.toxics())

    @routes.post("/toxics")
    async def add(request: web.Request) -> web.Response:
        try:
            body = await request.json()
            name = proxy.add_toxic(body)
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        except UserError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"name": name}, status=201)

    @routes.delete("/toxics/{name}")
    async def remove(request: web.Request) -> web.Response:
        try:
            proxy.remove_toxic(request.match_info["name"])
        except UserError as exc:
            return web.json_response({"error": str(exc)}, status=404)
        return web.Response(status=204)

    @routes.post("/reset")
    async def reset(request: web.Request) -> web.Response:
        proxy.clear()
        return web.Response(status=204)

    @routes.get("/counters")
    async def counters(request: web.Request) -> web.Response:
        return web.json_response(dict(proxy.counters))

    app = web.Application()
    app.add_routes(routes)
    return app
