"""Fixtures for the load side: a real fake ESP process on free loopback ports, and a helper that runs a
LoadSpec through LoadRun (Locust in its own subprocesses, never in pytest's) and reads the ledgers."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.targets.base import Endpoint
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port
from mailstorm.scenarios.launch import LoadRun
from mailstorm.scenarios.model import LoadSpec


@pytest.fixture
def start_esp(tmp_path: Path) -> Iterator[Callable[..., EspProcess]]:
    """Start fake ESP processes (EspProcess keyword arguments); every one is stopped afterwards."""
    started: list[EspProcess] = []

    def start(**kwargs: Any) -> EspProcess:
        n = len(started)
        kwargs.setdefault("log_path", tmp_path / f"esp-{n}.log")
        esp = EspProcess(tmp_path / f"esp-{n}-ledger", seed=7, **kwargs).start()
        started.append(esp)
        return esp

    yield start
    for esp in started:
        esp.stop()


@pytest.fixture
def esp(start_esp: Callable[..., EspProcess]) -> EspProcess:
    """A fake ESP with no faults, SMTP and HTTP APIs on free ports."""
    return start_esp(http_port=free_port())


@dataclass
class LoadResult:
    rc: int
    ledger_dir: Path
    log_dir: Path
    submits: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    started: list[dict[str, Any]]
    offered: int | None  # LoadRun.offered_so_far() once it ended

    @property
    def dropped_count(self) -> int:
        return sum(r["count"] for r in self.dropped)

    def per_second(self, field: str = "start") -> dict[int, int]:
        """Submissions per whole second of the schedule, counted from its zero (load.started t0)."""
        t0 = min(r["t0"] for r in self.started)
        counts = collections.Counter(int((r[field] - t0) // 1_000_000_000) for r in self.submits)
        return dict(sorted(counts.items()))


@pytest.fixture
def run_load(tmp_path: Path) -> Callable[..., LoadResult]:
    """Run a load spec (a dict, validated as the scenario file's ``load:``) to its end."""

    def run(
        spec: dict[str, Any], endpoints: list[Endpoint], *, seed: int = 1, timeout: float = 120
    ) -> LoadResult:
        ledger = tmp_path / "ledger"
        logs = tmp_path / "load-logs"
        lr = LoadRun(LoadSpec.model_validate(spec), endpoints, ledger, run_id="t1", seed=seed, log_dir=logs)
        lr.start()
        try:
            rc = lr.wait(timeout)
        finally:
            lr.stop()
        reader = LedgerReader(ledger)
        return LoadResult(
            rc=rc,
            ledger_dir=ledger,
            log_dir=logs,
            submits=list(reader.records([Kind.LOAD_SUBMIT])),
            dropped=list(reader.records([Kind.LOAD_DROPPED])),
            started=list(reader.records([Kind.LOAD_STARTED])),
            offered=lr.offered_so_far(),
        )

    return run


def smtp_endpoint(esp: EspProcess) -> list[Endpoint]:
    return [Endpoint("smtp", esp.smtp_host, esp.smtp_port)]


def accepted_ids(esp: EspProcess) -> list[str]:
    return [r["id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])]


@dataclass
class EchoServer:
    """A real aiohttp server (own thread and event loop) that keeps every request it was sent."""

    url: str
    requests: list[dict[str, Any]]
    statuses: list[int]  # answered in turn, then 202 for the rest


@pytest.fixture
def echo_http() -> Iterator[EchoServer]:
    """An HTTP endpoint standing in for a SUT's send API: records requests, answers 202 (or as told)."""
    import asyncio
    import threading

    from aiohttp import web

    port = free_port()
    server = EchoServer(url=f"http://127.0.0.1:{port}", requests=[], statuses=[])
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        server.requests.append(
            {"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body}
        )
        status = server.statuses.pop(0) if server.statuses else 202
        return web.json_response({"queued": status == 202}, status=status)

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = loop.run_until_complete(serve())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="echo-http", daemon=True)
    thread.start()
    assert ready.wait(10), "echo HTTP server did not start"
    yield server
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
