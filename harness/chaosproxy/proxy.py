"""``ChaosProxy``: the synchronous face of the proxy, for the runner and for tests.

The proxy's event loop runs in a daemon thread of the calling process, so it needs no process of its
own and cannot outlive the run (a crash or Ctrl-C of the runner takes it down too); ``stop`` closes every
connection and the listeners. One proxy fronts one or more paths, each its own listening port to its own
upstream (the runner's: ``smtp``, ``http``, ``webhooks``); ``address(path)`` says where each listens.
Calls cross into the loop thread and wait for the result, so a toxic added by ``add_toxic`` is active
when the call returns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from aiohttp import web

from mailstorm.errors import HarnessError
from mailstorm.harness.chaosproxy.base import ToxicSpecBase
from mailstorm.harness.chaosproxy.control import build_app
from mailstorm.harness.chaosproxy.server import ProxyServer
from mailstorm.ledger import LedgerWriter
from mailstorm.netguard import check_address

CALL_TIMEOUT_S = 10.0


class ChaosProxy:
    """A TCP proxy from ``listen`` to ``upstream`` with switchable toxics.

    ``upstream``: one (host, port), which is the path ``smtp``; or a mapping path -> (host, port), one
    listening port each (``listen`` is the first one's; the others take free ports on its host).
    ``control_port``: None = no HTTP control; 0 = a free loopback port; else that port. ``ledger``:
    where toxic actions and upstream failures are recorded (none: not recorded).
    """

    def __init__(
        self,
        upstream: tuple[str, int] | Mapping[str, tuple[str, int]],
        *,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        seed: int = 0,
        control_port: int | None = None,
        allow_remote: bool = False,
        ledger: LedgerWriter | None = None,
    ) -> None:
        upstreams = dict(upstream) if isinstance(upstream, Mapping) else {"smtp": upstream}
        for host, _ in upstreams.values():
            check_address(host, allow_remote=allow_remote, what="chaos proxy upstream")
        check_address(listen[0], allow_remote=allow_remote, what="chaos proxy listen address")
        self._server = ProxyServer(upstreams, listen=listen, seed=seed, ledger=ledger)
        self._control_port = control_port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0
        self.control_url: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> ChaosProxy:
        ready: Future[None] = Future()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="chaosproxy", daemon=True)
        self._thread.start()
        try:
            ready.result(CALL_TIMEOUT_S)
        except Exception as exc:
            self._thread.join(CALL_TIMEOUT_S)
            raise HarnessError(f"chaos proxy did not start: {exc}") from None
        return self

    def _run(self, ready: Future[None]) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._open())
        except Exception as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        loop.run_forever()
        loop.run_until_complete(self._close())
        loop.close()

    async def _open(self) -> None:
        self.host, self.port = await self._server.start()
        if self._control_port is not None:
            self._runner = web.AppRunner(build_app(self._server), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self._control_port)
            await site.start()
            port = self._runner.addresses[0][1]
            self.control_url = f"http://127.0.0.1:{port}"

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        await self._server.stop()

    def stop(self) -> None:
        """Close every connection and the listener; idempotent."""
        if self._loop is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CALL_TIMEOUT_S)
        self._loop = None
        self._thread = None

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the function API ----------------------------------------------------------------------------
    def _call(self, fn, *args: Any) -> Any:
        if self._loop is None:
            raise HarnessError("chaos proxy is not running")

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(CALL_TIMEOUT_S)

    def add_toxic(self, spec: dict[str, Any] | ToxicSpecBase, *, esp: str | None = None) -> str:
        """Activate a toxic now (``esp``: on that ESP's paths alone); returns its name. ConfigError on a
        bad spec (names the field)."""
        return self._call(lambda: self._server.add_toxic(spec, esp=esp))

    def remove_toxic(self, name: str) -> None:
        """Deactivate a toxic now; UserError when no toxic has that name."""
        self._call(self._server.remove_toxic, name)

    def clear(self) -> None:
        self._call(self._server.clear)

    def toxics(self) -> list[dict[str, Any]]:
        return self._call(self._server.toxics)

    def counters(self) -> dict[str, int]:
        return self._call(lambda: dict(self._server.counters))

    @property
    def upstream(self) -> tuple[str, int]:
        return self._server.upstream

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(self._server.upstreams)

    def address(self, path: str) -> tuple[str, int]:
        """Where ``path`` listens (after ``start``)."""
        return self._call(self._server.address_of, path)
