"""The asyncio TCP proxy itself: accepts on one loopback port per path, connects each client to that
path's upstream, and runs the bytes of each direction through the active toxics for that path.

Each direction of a connection is a reader task feeding a bounded queue (each chunk stamped with its
arrival time) and a writer loop that runs the toxic chain per chunk, so a latency toxic is a delay line
(bytes leave ``ms`` after they arrived) and a slow toxic back-pressures the sender through the queue.
Toxics can be added and removed while connections are open; a change applies from the next chunk.

With a ledger, the proxy writes proxy.acted the first time a toxic acts on a connection and
proxy.upstream.failed when it cannot reach a path's upstream (mailstorm.ledger documents both).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from mailstorm.errors import ConfigError, UserError
from mailstorm.harness.chaosproxy.base import Send, ToxicSpecBase, split_path
from mailstorm.harness.chaosproxy.spec import build_toxic, parse_toxic
from mailstorm.ledger import LedgerWriter, ProxyActed, ProxyUpstreamFailed

log = logging.getLogger(__name__)

CHUNK = 65536
QUEUE_CHUNKS = 64  # back-pressure: at most this many chunks wait inside the proxy per direction
CONNECT_TIMEOUT_S = 5.0


def _rst(writer: asyncio.StreamWriter) -> None:
    """Abort the socket with SO_LINGER 0, so the peer gets a TCP RST (ECONNRESET), not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    """One proxied client connection: both sockets, its RNG and its per-toxic toxicity decisions."""

    def __init__(self, cid: int, path: str, rng: random.Random, opened: float) -> None:
        self.cid = cid
        self.path = path
        self.rng = rng
        self.opened = opened
        self.decisions: dict[str, bool] = {}
        self.acted: set[str] = set()  # toxics already recorded as having acted on this connection
        self.writers: list[asyncio.StreamWriter] = []
        self.task: asyncio.Task | None = None
        self.was_reset = False

    def applies(self, name: str, toxicity: float) -> bool:
        if name not in self.decisions:
            self.decisions[name] = toxicity >= 1.0 or self.rng.random() < toxicity
        return self.decisions[name]

    def reset(self) -> None:
        self.was_reset = True
        for w in self.writers:
            _rst(w)
        if self.task is not None:
            self.task.cancel()

    def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.task is not None:
            self.task.cancel()


class _Link:
    """One direction of a connection (the ``Link`` a toxic sees)."""

    def __init__(self, conn: _Connection, direction: str, ledger: LedgerWriter | None) -> None:
        self.conn = conn
        self.direction = direction
        self.path = conn.path
        self.kind, self.esp = split_path(conn.path)
        self._ledger = ledger
        self.rng = conn.rng
        self.opened = conn.opened
        self.state: dict[str, Any] = {}

    def reset(self) -> None:
        self.conn.reset()

    def close(self) -> None:
        self.conn.close()

    def acted(self, toxic: Any, action: str) -> None:
        name = toxic.name
        if self._ledger is None or name in self.conn.acted:
            return
        self.conn.acted.add(name)
        self._ledger.write(
            ProxyActed(
                toxic=name, type=toxic.spec.type, path=self.path, conn=self.conn.cid,
                direction=self.direction, action=action,
            )
        )  # fmt: skip


class ProxyServer:
    """The proxy on the running event loop. ``start`` binds every path; ``add_toxic``/``remove_toxic``
    change it live. ``upstreams``: path name -> (host, port); ``listen`` is the first path's address
    (the others listen on free ports of its host)."""

    def __init__(
        self,
        upstreams: Mapping[str, tuple[str, int]],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int = 0,
        ledger: LedgerWriter | None = None,
    ):
        if not upstreams:
            raise ValueError("a proxy needs at least one path")
        self.upstreams = dict(upstreams)
        self.listen = listen
        self.ledger = ledger
        self._rng = random.Random(seed)
        self._toxics: dict[str, Any] = {}
        self._esp_of: dict[str, str] = {}  # toxic name -> the one ESP whose paths it acts on
        self._conns: set[_Connection] = set()
        self._ids = itertools.count(1)
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self.counters = {"connections": 0, "upstream_failed": 0, "resets": 0, "bytes_up": 0, "bytes_down": 0}

    @property
    def upstream(self) -> tuple[str, int]:
        """The first path's upstream."""
        return next(iter(self.upstreams.values()))

    @property
    def address(self) -> tuple[str, int]:
        """The first path's listening address."""
        return self.address_of(next(iter(self.upstreams)))

    def address_of(self, path: str) -> tuple[str, int]:
        server = self._servers.get(path)
        assert server is not None, f"proxy path {path!r} not started"
        host, port = server.sockets[0].getsockname()[:2]
        return host, port

    async def start(self) -> tuple[str, int]:
        for i, path in enumerate(self.upstreams):
            port = self.listen[1] if i == 0 else 0

            async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter, path: str = path) -> None:
                await self._handle(path, r, w)

            self._servers[path] = await asyncio.start_server(handle, self.listen[0], port)
        return self.address

    async def stop(self) -> None:
        for server in self._servers.values():
            server.close()
        for conn in list(self._conns):
            conn.close()
        tasks = [c.task for c in self._conns if c.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers.values():
            await server.wait_closed()
        self._servers.clear()

    # -- toxics --------------------------------------------------------------------------------------
    def add_toxic(self, raw: dict[str, Any] | ToxicSpecBase, *, esp: str | None = None) -> str:
        """Activate a toxic; ``esp``: on that ESP's paths alone (paths named ``<kind>@<esp>``; a proxy
        fronting one ESP has no other, so there it changes nothing)."""
        spec = parse_toxic(raw)
        if spec.name is None and spec.type in self._toxics:
            # An unnamed toxic of a type already active (two overlapping timeline windows) gets a free name.
            n = 2
            while f"{spec.type}-{n}" in self._toxics:
                n += 1
            spec = spec.model_copy(update={"name": f"{spec.type}-{n}"})
        toxic = build_toxic(spec)
        if toxic.name in self._toxics:
            raise ConfigError(f"toxic {toxic.name!r} already active; give it another name or remove it")
        self._toxics[toxic.name] = toxic
        if esp is not None:
            self._esp_of[toxic.name] = esp
        return toxic.name

    def remove_toxic(self, name: str) -> None:
        if self._toxics.pop(name, None) is None:
            raise UserError(f"no active toxic named {name!r}")
        self._esp_of.pop(name, None)

    def clear(self) -> None:
        self._toxics.clear()
        self._esp_of.clear()

    def toxics(self) -> list[dict[str, Any]]:
        return [
            t.spec.model_dump() | {"name": n} | ({"esp": self._esp_of[n]} if n in self._esp_of else {})
            for n, t in self._toxics.items()
        ]

    def _chain_for(self, link: _Link) -> list[Any]:
        return [
            t
            for t in self._toxics.values()
            if t.spec.stream in (link.direction, "both")
            and (t.spec.on is None or link.kind in t.spec.on)
            and (link.esp is None or self._esp_of.get(t.name, link.esp) == link.esp)
            and link.conn.applies(t.name, t.spec.toxicity)
        ]

    # -- connections ---------------------------------------------------------------------------------
    async def _handle(
        self, path: str, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        rng = random.Random(self._rng.getrandbits(64))
        conn = _Connection(next(self._ids), path, rng, asyncio.get_running_loop().time())
        conn.task = asyncio.current_task()
        conn.writers.append(c_writer)
        self._conns.add(conn)
        self.counters["connections"] += 1
        try:
            try:
                u_reader, u_writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstreams[path]), CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                # The upstream is down: the client sees its connection reset, as it would see a refusal.
                self.counters["upstream_failed"] += 1
                if self.ledger is not None:
                    why = f"{type(exc).__name__}: {exc}"[:200]
                    self.ledger.write(ProxyUpstreamFailed(path=path, conn=conn.cid, error=why))
                _rst(c_writer)
                return
            conn.writers.append(u_writer)
            pumps = [
                asyncio.create_task(self._pump(c_reader, u_writer, self._link(conn, "upstream"), "bytes_up")),
                asyncio.create_task(
                    self._pump(u_reader, c_writer, self._link(conn, "downstream"), "bytes_down")
                ),
            ]
            try:
                # Both directions run until each has seen EOF (half-closes pass through); a broken socket
                # on either side ends the connection.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            if conn.was_reset:
                self.counters["resets"] += 1
            for w in conn.writers:
                w.close()
            self._conns.discard(conn)

    def _link(self, conn: _Connection, direction: str) -> _Link:
        return _Link(conn, direction, self.ledger)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, counter: str
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue(QUEUE_CHUNKS)

        async def read() -> None:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    data = b""
                await queue.put((data, loop.time()))
                if not data:
                    return

        async def sink(data: bytes) -> None:
            self.counters[counter] += len(data)
            writer.write(data)
            await writer.drain()

        reading = asyncio.create_task(read())
        try:
            while True:
                data, arrived = await queue.get()
                if not data:
                    if writer.can_write_eof() and not writer.is_closing():
                        with contextlib.suppress(OSError):
                            writer.write_eof()
                    return
                await _run_chain(self._chain_for(link), data, arrived, link, sink)
        finally:
            reading.cancel()


async def _run_chain(toxics: Iterable[Any], data: bytes, arrived: float, link: _Link, sink: Send) -> None:
    """Pass ``data`` through ``toxics`` in order; the last one's ``send`` writes to the socket.

    The first toxic sees the chunk's arrival from the socket; each later one sees the moment the previous
    toxic handed it on, so two latency toxics add up instead of overlapping.
    """
    chain = list(toxics)
    loop = asyncio.get_running_loop()

    def stage(i: int) -> Send:
        if i == len(chain):
            return sink

        async def send(piece: bytes) -> None:
            await chain[i].pipe(piece, arrived if i == 0 else loop.time(), link, stage(i + 1))

        return send

    await stage(0)(data)
