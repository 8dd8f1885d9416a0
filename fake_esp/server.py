"""Running a fake ESP: one process, or a control process with N SMTP worker processes on one port.

processes == 1: the control API, the engine and the SMTP listener share one event loop (uvloop when
importable), so a control change takes effect on the next step.

processes > 1: the parent forks N workers before starting its own loop. Each worker binds the SMTP port
with SO_REUSEPORT (the kernel spreads connections), owns its engine (seeded ``<seed>/<worker>``), its
counters and its ledger file ``esp-smtp-<worker>.jsonl``
(``esp-<name>-smtp-<worker>.jsonl`` with ``--name``); the limits (throttle buckets, quotas, greylist
triplets, count and attempts scopes, open sessions) are the ESP's: held in one ``SharedState``
(mailstorm.fake_esp.shared) the parent makes before the fork. The parent
serves the control API over an engine that is only the store of faults, and mirrors every change to the
workers over a pipe (``("load", snapshot)``); counters are gathered from the workers on request. A
worker exits when its pipe closes, so it never outlives a killed parent.

Webhook keys (mailstorm.fake_esp.webhooks.signing): when webhooks are set, the parent loads or makes the
run's keys file before any worker starts (``prepare_webhook_keys``, which prints SendGrid's verification
key); each worker's poster loads the same file, and the control API serves what the formats publish
(SNS's certificate and ConfirmSubscription), recording in the ``esp[-<name>]-sns`` ledger.

TLS (``--tls``): the CA and the server certificates are made once, in the parent, before any worker is
forked (mailstorm.fake_esp.tls.make_material), and the CA written to ``--tls-ca``; each worker builds its
own ssl contexts from them, so every worker serves the same certificate.

Other listeners in a worker (the HTTP APIs of issue 3) start from ``start_worker`` with the same
``WorkerContext``: a module ``mailstorm.fake_esp.http`` exposing ``async start(ctx) -> object with async
close()``
is started when ``spec.http_port`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib
import itertools
import logging
import multiprocessing
import signal
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailstorm.errors import EXIT_OK, HarnessError, UserError
from mailstorm.fake_esp.control import make_app, start_control
from mailstorm.fake_esp.counters import Counters, merge
from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.messages import Found, MessageStore, Query, Received
from mailstorm.fake_esp.shared import SharedState
from mailstorm.fake_esp.smtp import SmtpService
from mailstorm.fake_esp.spec import EspSpec, ledger_source
from mailstorm.fake_esp.tls import Contexts, TlsMaterial, contexts, make_material
from mailstorm.ledger import LedgerWriter, SegmentPolicy
from mailstorm.netguard import is_loopback

if TYPE_CHECKING:
    from mailstorm.fake_esp.webhooks.signing import WebhookKeys

log = logging.getLogger("fake_esp")

DEFAULT_LEDGER = Path("esp-ledger")


@dataclass
class WorkerContext:
    """What every listener of one worker process shares (one engine, one ledger file, one set of
    counters), so a fault with phases [data, http] and the ledger cover both protocols."""

    spec: EspSpec
    worker: int
    engine: Engine
    counters: Counters
    ledger: LedgerWriter
    # Called with each message the worker keeps, SMTP or HTTP: its message store, the webhook poster.
    accepted_hooks: list[Any] = field(default_factory=list)
    # The worker's TLS contexts (SMTP and https); None when TLS is off.
    tls: Contexts | None = None
    # The latest messages it accepted, for GET /messages (its ``add`` is the first accepted hook).
    messages: MessageStore | None = None


@dataclass
class Worker:
    ctx: WorkerContext
    smtp: SmtpService
    extras: list[Any] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self.smtp.ready

    def counters(self) -> dict[str, Any]:
        return self.ctx.counters.as_dict(self.ctx.engine.fired)

    async def close(self) -> None:
        for extra in self.extras:
            await extra.close()
        await self.smtp.close()
        self.ctx.ledger.close()


def engine_seed(spec: EspSpec, worker: int) -> str:
    return f"{spec.seed}/{worker}"


def install_faults(engine: Engine, spec: EspSpec) -> None:
    """The faults the ESP starts with; a named one replaces an earlier one of that name (profiles)."""
    for fault in spec.faults:
        if fault.name:
            engine.put(fault.name, fault)
        else:
            engine.add(fault)


async def start_worker(spec: EspSpec, worker: int, engine: Engine, tls: TlsMaterial | None = None) -> Worker:
    # Closed segments compressed at zstd level 1: the optimal parser would take ~10% of this process's
    # CPU at full rate and keep its lines only 5% smaller (mailstorm.ledger.segments).
    fast = dataclasses.replace(SegmentPolicy.from_env(), fast=True)
    ledger = LedgerWriter(spec.ledger or DEFAULT_LEDGER, ledger_source(spec.name, worker), policy=fast)
    ctx = WorkerContext(spec, worker, engine, Counters(), ledger, tls=contexts(tls) if tls else None)
    ctx.messages = MessageStore(worker, spec.keep_messages)
    ctx.accepted_hooks.append(ctx.messages.add)
    smtp = SmtpService(spec, engine, ledger, ctx.counters, worker, tls=ctx.tls)
    smtp.accepted_hooks = ctx.accepted_hooks
    try:
        await smtp.start()
    except OSError as exc:
        ledger.close()
        raise UserError(
            f"--smtp-port {spec.smtp_port}: cannot listen on {spec.bind}: {exc.strerror}"
        ) from None
    w = Worker(ctx, smtp)
    if spec.http_port is not None or spec.webhooks is not None:
        try:
            http = importlib.import_module("mailstorm.fake_esp.http")
        except ModuleNotFoundError:
            await w.close()
            raise UserError("--http-port: the HTTP APIs are not installed in this build") from None
        w.extras.append(await http.start(ctx))
    return w


def check_bind(spec: EspSpec, *, tokenless: bool = False) -> None:
    """Off loopback, the control API (which can take the ESP down) needs a token, or the user's explicit
    --no-token (a container: its network is its own, and the user chooses which ports reach it)."""
    if not is_loopback(spec.bind) and not spec.token and not tokenless:
        raise UserError(
            f"--bind {spec.bind}: not a loopback address; the fake ESP listens off this machine only with "
            "--token set (every control request must then carry it), or --no-token in a container"
        )


def prepare_tls(spec: EspSpec) -> TlsMaterial | None:
    """The TLS material of the whole ESP (None when TLS is off), its CA written to ``--tls-ca``; says
    where, so a user knows the one file to trust."""
    if not spec.tls_on:
        return None
    ca = spec.ca_path(DEFAULT_LEDGER)
    material = make_material(spec.hostname, ca, cert=spec.tls_cert, key=spec.tls_key)
    https = " and https" if spec.http_port is not None else ""
    print(f"fake ESP: TLS {spec.tls} on SMTP{https}; CA certificate: {material.ca_path}", flush=True)
    return material


def webhook_keys(spec: EspSpec) -> WebhookKeys | None:
    """The run's webhook keys (None without webhooks), made if their file is not there yet."""
    if spec.webhooks is None:
        return None
    from mailstorm.fake_esp.webhooks.signing import load_or_make

    return load_or_make(spec.webhook_keys_path(DEFAULT_LEDGER), spec.webhooks.sendgrid_key)


def prepare_webhook_keys(spec: EspSpec) -> None:
    """Make the webhook keys before any worker starts (they all load the file); say SendGrid's
    verification key, which a receiver is configured with."""
    keys = webhook_keys(spec)
    if keys is not None:
        where = spec.webhook_keys_path(DEFAULT_LEDGER)
        print(f"fake ESP: webhook keys {where}; SendGrid verification key {keys.sendgrid_public}", flush=True)


def public_routes(spec: EspSpec) -> list[Any]:
    """What the control API serves for the webhooks without its token (SNS's URLs); records of them go
    to the ``esp[-<name>]-sns`` ledger, opened at the first."""
    keys = webhook_keys(spec)
    if spec.webhooks is None or keys is None:
        return []
    from mailstorm.fake_esp.webhooks.formats import routes

    writers: list[LedgerWriter] = []

    def write(record: Any) -> None:
        if not writers:
            writers.append(LedgerWriter(spec.ledger or DEFAULT_LEDGER, f"esp-{spec.name}-sns" if spec.name
                                        else "esp-sns"))  # fmt: skip
        writers[0].write(record)

    return routes(keys, spec.webhooks.url, write)


def serve(spec: EspSpec, *, tokenless: bool = False) -> int:
    """Run the ESP until SIGTERM/SIGINT; returns the exit code."""
    check_bind(spec, tokenless=tokenless)
    tls = prepare_tls(spec)
    prepare_webhook_keys(spec)
    if spec.processes == 1:
        return _run(_serve_single(spec, tls))
    return _serve_multi(spec, tls)


def _run(coro) -> Any:
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # uvloop is optional (not on Windows): asyncio's loop is ~25% slower
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


# -- one process -----------------------------------------------------------------------------------------
class LocalBackend:
    workers = 1

    def __init__(self, engine: Engine, worker: Worker) -> None:
        self.engine = engine
        self.worker = worker

    def ready(self) -> bool:
        return self.worker.ready

    async def changed(self, reset: bool = False) -> None:
        """Nothing to forward: the control API and the SMTP listener share this engine."""

    async def counters(self) -> dict[str, Any]:
        return merge([self.worker.counters()])

    @property
    def _store(self) -> MessageStore:
        assert self.worker.ctx.messages is not None
        return self.worker.ctx.messages

    async def messages(self, q: Query) -> Found:
        return self._store.find(q)

    async def message(self, mid: str) -> Received | None:
        return self._store.get(mid)

    async def arrival(self, timeout: float) -> None:
        await self._store.arrival(timeout)


async def _serve_single(spec: EspSpec, tls: TlsMaterial | None) -> int:
    stop = _stop_event()
    engine = Engine(engine_seed(spec, 0))
    install_faults(engine, spec)
    worker = await start_worker(spec, 0, engine, tls)
    try:
        runner = await _control(LocalBackend(engine, worker), spec)
    except BaseException:
        await worker.close()
        raise
    log.info("fake ESP: SMTP %s:%s, control %s:%s", spec.bind, spec.smtp_port, spec.bind, spec.control_port)
    # What the process started with lives as long as it: its imports (pydantic, aiohttp...), its faults
    # and their indexes, the listeners, the control API. Out of the cyclic GC's sight, so the collections
    # the per-message garbage triggers do not rescan them (~700 instructions per message).
    gc.freeze()
    await stop.wait()
    await runner.cleanup()
    await worker.close()
    return EXIT_OK


async def _control(backend, spec: EspSpec):
    try:
        app = make_app(backend, spec.token, spec.store_bodies, public_routes(spec))
        return await start_control(app, spec.bind, spec.control_port)
    except OSError as exc:
        raise UserError(
            f"--control-port {spec.control_port}: cannot listen on {spec.bind}: {exc.strerror}"
        ) from None


# -- N processes -------------------------------------------------------------------------------------------
def _serve_multi(spec: EspSpec, tls: TlsMaterial | None) -> int:
    mp = multiprocessing.get_context("fork")  # fork before any loop exists: nothing running is copied
    store = Engine(engine_seed(spec, 0))
    install_faults(store, spec)
    shared = SharedState()  # before the fork: every worker maps the same memory
    conns: list[Connection] = []
    procs = []
    for i in range(spec.processes):
        ours, theirs = mp.Pipe()
        conns.append(ours)
        proc = mp.Process(
            target=_worker_process,
            args=(spec, i, theirs, list(conns), tls, shared),
            name=f"fake-esp-{i}",
        )
        proc.start()
        theirs.close()
        procs.append(proc)
    try:
        for conn in conns:
            conn.send(("load", store.snapshot()))
        return _run(_serve_parent(spec, store, conns, procs))
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _worker_process(
    spec: EspSpec,
    index: int,
    conn: Connection,
    inherited: list[Connection],
    tls: TlsMaterial | None,
    shared: SharedState,
) -> None:
    # Close the parent's ends of every pipe this fork copied, our own included: otherwise our pipe
    # never reports EOF when the parent dies.
    for other in inherited:
        other.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    _load, snapshot = conn.recv()  # the parent sends the faults first, before we listen
    engine = Engine(engine_seed(spec, index), shared=shared)
    engine.load(snapshot)
    try:
        _run(_serve_worker(spec, index, engine, conn, tls))
    except UserError as exc:
        with contextlib.suppress(OSError):
            conn.send(("error", index, str(exc)))


async def _serve_worker(
    spec: EspSpec, index: int, engine: Engine, conn: Connection, tls: TlsMaterial | None
) -> None:
    stop = _stop_event()
    loop = asyncio.get_running_loop()
    worker = await start_worker(spec, index, engine, tls)
    store = worker.ctx.messages
    assert store is not None

    def on_message() -> None:
        try:
            while conn.poll():
                op, *args = conn.recv()
                if op == "load":
                    engine.load(args[0])
                elif op == "reset":
                    engine.reset()
                    engine.load(args[0])
                elif op == "counters":
                    conn.send(("counters", args[0], worker.counters()))
                elif op == "messages":
                    conn.send(("messages", args[0], store.find(Query.from_dict(args[1]))))
                elif op == "message":
                    conn.send(("message", args[0], store.get(args[1])))
                elif op == "stop":
                    stop.set()
        except (EOFError, OSError):  # the parent is gone: so are we
            loop.remove_reader(conn.fileno())
            stop.set()

    def ended(fault_id: str, added_at: float) -> None:
        with contextlib.suppress(OSError):  # the store drops it and tells every worker
            conn.send(("ended", fault_id, added_at))

    engine.on_end.append(ended)
    loop.add_reader(conn.fileno(), on_message)
    conn.send(("ready", index, None))
    gc.freeze()  # as _serve_single, once started
    await stop.wait()
    await worker.close()


class PipeBackend:
    """The parent's view: a store engine, workers reached over pipes."""

    def __init__(self, engine: Engine, conns: list[Connection]) -> None:
        self.engine = engine
        self.conns = conns
        self.workers = len(conns)
        self._ready: set[int] = set()
        self._pending: dict[int, tuple[asyncio.Future[None], list[Any]]] = {}
        self._req = itertools.count(1)
        self.failed: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    def listen(self) -> None:
        loop = asyncio.get_running_loop()
        for conn in self.conns:
            loop.add_reader(conn.fileno(), self._on_message, conn)

    def _on_message(self, conn: Connection) -> None:
        try:
            while conn.poll():
                op, key, payload = conn.recv()
                if op == "ready":
                    self._ready.add(key)
                elif op in ("counters", "messages", "message") and key in self._pending:
                    done, parts = self._pending[key]
                    parts.append(payload)
                    if len(parts) == self.workers and not done.done():
                        done.set_result(None)
                elif op == "ended" and self.engine.end(key, payload):
                    self._broadcast(("load", self.engine.snapshot()))
                elif op == "error" and not self.failed.done():
                    self.failed.set_result(UserError(payload))
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
            if not self.failed.done():
                self.failed.set_result(HarnessError("a fake ESP worker process exited"))

    def ready(self) -> bool:
        return len(self._ready) == self.workers

    def _broadcast(self, message: tuple) -> None:
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(message)

    async def changed(self, reset: bool = False) -> None:
        self._broadcast(("reset" if reset else "load", self.engine.snapshot()))

    async def _gather(self, op: str, *args: Any) -> list[Any]:
        """Ask every worker (``(op, req, *args)``) and collect their answers."""
        req = next(self._req)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        parts: list[Any] = []
        self._pending[req] = (done, parts)
        self._broadcast((op, req, *args))
        try:
            await asyncio.wait_for(done, 5.0)
        except TimeoutError:
            raise HarnessError(f"only {len(parts)} of {self.workers} workers answered for {op}") from None
        finally:
            del self._pending[req]
        return parts

    async def counters(self) -> dict[str, Any]:
        return merge(await self._gather("counters"))

    async def messages(self, q: Query) -> Found:
        return Found.merge(await self._gather("messages", q.as_dict()), q)

    async def message(self, mid: str) -> Received | None:
        return next((m for m in await self._gather("message", mid) if m is not None), None)

    async def arrival(self, timeout: float) -> None:
        """No word from the workers when mail arrives (it would cost a pipe message per message under
        load): a long poll asks them again after at most 50 ms."""
        await asyncio.sleep(min(timeout, 0.05))


async def _serve_parent(spec: EspSpec, store: Engine, conns: list[Connection], procs: list) -> int:
    stop = _stop_event()
    backend = PipeBackend(store, conns)
    backend.listen()
    runner = await _control(backend, spec)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([stopping, backend.failed], return_when=asyncio.FIRST_COMPLETED)
    await runner.cleanup()
    backend._broadcast(("stop",))
    if backend.failed.done():
        stopping.cancel()
        raise backend.failed.result()
    return EXIT_OK
