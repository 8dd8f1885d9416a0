"""Following an outage on one listener: the ticker that closes it (refuse mode) and opens it again.

Each listener of a worker (SMTP, the HTTP APIs) owns one ``OutageWatch`` for its surface. Every
``TICK_S`` it asks the engine whether an outage takes that surface down (``Engine.outage(surface)``);
at a change it writes the listener's esp.fault record (phase "listener", state "begin" / "end", proto
the surface) and, in refuse mode, calls the listener's ``close`` (stop accepting, so the kernel refuses
new connections, and cut every open one) at the start and its ``reopen`` at the end. Hang mode leaves
the listener open: the engine answers "hang" at every step of the surface's phases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from mailstorm.fake_esp.engine import Engine, Outage
from mailstorm.ledger import EspFault, LedgerWriter

log = logging.getLogger("mailstorm.fake_esp.outage")

TICK_S = 0.02


class OutageWatch:
    """The outage state of one listener; ``outage`` is the one it is following (None: up)."""

    def __init__(
        self,
        engine: Engine,
        surface: str,
        ledger: LedgerWriter,
        *,
        close: Callable[[Outage], None],
        reopen: Callable[[], Awaitable[None]],
    ) -> None:
        self.engine = engine
        self.surface = surface
        self.ledger = ledger
        self._close = close
        self._reopen = reopen
        self.outage: Outage | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.follow(self.engine.outage(self.surface))
            except OSError as exc:  # the port taken while we were down: keep trying, say so
                log.warning("cannot reopen the %s listener: %s", self.surface, exc)
            except Exception:  # a bug must not end the watch: the listener would stay as it is for good
                log.exception("following an outage on the %s listener failed", self.surface)

    async def follow(self, outage: Outage | None) -> None:
        if outage is not None and self.outage is None:
            self.outage = outage
            self._record(outage, "begin")
            if outage.mode == "refuse":
                self._close(outage)
        elif outage is None and self.outage is not None:
            ended = self.outage
            if ended.mode == "refuse":
                await self._reopen()  # raises while the port is taken: retried at the next tick
            self.outage = None
            self._record(ended, "end")

    def _record(self, outage: Outage, state: str) -> None:
        self.ledger.write(
            EspFault(
                fault=outage.fault, ftype="outage", phase="listener", action=outage.mode,
                state=state, session=None, delay_s=0.0, proto=self.surface,
            )
        )  # fmt: skip
