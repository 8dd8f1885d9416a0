"""The Locust side of the load: one driver user per load process, the ledger, and run completion.

Locust provides the process model (standalone, or master + workers over its own protocol), the stats
and the event hooks; the workload itself is ``mailstorm.scenarios.driver`` (open arrival schedule or closed
users) running inside a single ``MailstormDriver`` user per load process, because Locust's own
users-per-second model is closed and would hide a slow SUT.

Settings come as custom command-line options, which Locust forwards from the master to every worker
with the spawn message, so a remote worker started with only ``--master HOST`` runs the same spec.

Ledger. A process started by ``mailstorm.scenarios.launch.LoadRun`` has ``MAILSTORM_LEDGER_DIR`` and writes
``load-<index>.jsonl`` there itself. A remote worker (``mailstorm worker``) has no access to the run
directory: it writes its records to a local spool file (durable) and ships them in batches to the
master as a Locust custom message, and the master appends them, with their original timestamps, to
``load-<index>.jsonl`` in the run's ledger directory.

Completion. Each load process tells the master ``mailstorm_done`` after its last record; when every
expected process has, the master quits (standalone: the process quits itself).

Loaded only by Locust (``locust -f``), in its own processes: importing it patches sockets with gevent.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import gevent
import orjson
from locust import User, events, task
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner

from mailstorm.errors import EXIT_HARNESS_FAILED
from mailstorm.harness.targets.base import Endpoint
from mailstorm.ledger import LedgerWriter, Record, encode_line
from mailstorm.netguard import check_address
from mailstorm.scenarios.driver import ClosedDriver, OpenDriver, Recorder, Submitter
from mailstorm.scenarios.http_submit import HttpSubmitter
from mailstorm.scenarios.launch import ALLOW_REMOTE_ENV, LEDGER_DIR_ENV, SPOOL_DIR_ENV, endpoint_host
from mailstorm.scenarios.messages import MessageFactory
from mailstorm.scenarios.model import LoadSpec
from mailstorm.scenarios.submit import SmtpSubmitter

MSG_LEDGER = "mailstorm_ledger"
MSG_DONE = "mailstorm_done"
SHIP_EVERY_S = 0.25
logger = logging.getLogger("mailstorm.load")


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    hidden = {"include_in_web_ui": False}
    parser.add_argument("--mailstorm-spec", default="", help="LoadSpec as JSON", **hidden)
    parser.add_argument("--mailstorm-endpoints", default="[]", help="endpoints as JSON", **hidden)
    parser.add_argument("--mailstorm-run-id", default="run", **hidden)
    parser.add_argument("--mailstorm-seed", type=int, default=0, **hidden)


class Shipper:
    """A remote worker's ledger: a local spool file plus batches shipped to the master."""

    def __init__(self, runner: WorkerRunner, spool: LedgerWriter) -> None:
        self._runner = runner
        self._spool = spool
        self._batch: list[bytes] = []
        self._loop = gevent.spawn(self._every)

    def write(self, record: Record, /) -> int:
        t = time.time_ns()
        line = encode_line(record, t=t, src=self._spool.source)
        self._spool.write_lines((line,))
        self._batch.append(line)
        return t

    def flush(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._runner.send_message(MSG_LEDGER, {"src": self._spool.source, "lines": batch})

    def _every(self) -> None:
        while True:
            gevent.sleep(SHIP_EVERY_S)
            self.flush()

    def close(self) -> None:
        self._loop.kill()
        self.flush()
        self._spool.close()


class _Gatherer:
    """Master side: remote workers' shipped records, appended to the run's ledger under their source."""

    def __init__(self, ledger_dir: str) -> None:
        self._dir = ledger_dir
        self._writers: dict[str, LedgerWriter] = {}

    def __call__(self, environment: Any, msg: Any, **_: Any) -> None:
        src = msg.data["src"]
        if src not in self._writers:
            self._writers[src] = LedgerWriter(self._dir, src)
        self._writers[src].write_lines(msg.data["lines"])


class _Completion:
    """Master side: quit once every expected load process said it is done."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.done: set[int] = set()

    def __call__(self, environment: Any, msg: Any, **_: Any) -> None:
        self.done.add(msg.data["index"])
        if "error" in msg.data:
            logger.error("load worker %d failed: %s", msg.data["index"], msg.data["error"])
            environment.process_exit_code = EXIT_HARNESS_FAILED
        if len(self.done) >= self.expected:
            gevent.spawn(environment.runner.quit)


# The driver running in this process, so that Locust stopping (run-time backstop, master's quit) or
# quitting (SIGTERM) can abort it and have its in-flight submissions recorded before the process ends.
_running: set[ClosedDriver | OpenDriver] = set()


@events.test_stopping.add_listener
@events.quitting.add_listener
def _abort_running(**_: Any) -> None:
    for driver in list(_running):
        driver.abort()


@events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, MasterRunner):
        ledger_dir = os.environ.get(LEDGER_DIR_ENV)
        if ledger_dir:
            runner.register_message(MSG_LEDGER, _Gatherer(ledger_dir))
        runner.register_message(MSG_DONE, _Completion(environment.parsed_options.expect_workers))


def _submitters(spec: LoadSpec, endpoints: list[Endpoint]):
    per_conn, timeout = spec.msgs_per_connection, spec.timeout_s

    def make(n: int) -> Submitter:
        ep = endpoints[n % len(endpoints)]  # connections spread round-robin over the SUT's endpoints
        if spec.protocol == "http":
            assert spec.http is not None and ep.url is not None
            return HttpSubmitter(ep.url, spec.http, msgs_per_connection=per_conn, timeout_s=timeout)
        return SmtpSubmitter(ep.host, ep.port, spec.smtp, msgs_per_connection=per_conn, timeout_s=timeout)

    return make


class MailstormDriver(User):
    """One per load process: runs that process's share of the workload once, then reports done."""

    def _sink(self, index: int) -> LedgerWriter | Shipper:
        source = f"load-{index}"
        ledger_dir = os.environ.get(LEDGER_DIR_ENV)
        if ledger_dir:
            return LedgerWriter(ledger_dir, source)
        spool = LedgerWriter(os.environ.get(SPOOL_DIR_ENV, "mailstorm-spool"), source)
        return Shipper(self.environment.runner, spool)

    ran = False

    @task
    def drive(self) -> None:
        # Locust repeats a task that returns or raises; the workload must run exactly once per process
        # (a second run would reuse its ids), so every way out below ends this user.
        if self.ran:
            raise StopUser()
        self.ran = True
        env = self.environment
        runner = env.runner
        index = runner.worker_index if isinstance(runner, WorkerRunner) else 0
        summary: dict[str, Any] = {"index": index}
        try:
            summary.update(self._run(index, processes_known=isinstance(runner, WorkerRunner)))
        except Exception as exc:  # a bad setting or a bug: fail the whole run loudly, never retry it
            logger.exception("mailstorm load process %d failed", index)
            summary["error"] = f"{type(exc).__name__}: {exc}"
            env.process_exit_code = EXIT_HARNESS_FAILED
        if isinstance(runner, WorkerRunner):
            runner.send_message(MSG_DONE, summary)
        else:
            gevent.spawn(runner.quit)
        raise StopUser()

    def _run(self, index: int, *, processes_known: bool) -> dict[str, int]:
        env = self.environment
        opts = env.parsed_options
        spec = LoadSpec.model_validate_json(opts.mailstorm_spec)
        endpoints = [Endpoint(**e) for e in orjson.loads(opts.mailstorm_endpoints)]
        allow_remote = os.environ.get(ALLOW_REMOTE_ENV) == "1"
        for ep in endpoints:  # this process sends the traffic: the loopback guard applies here too
            check_address(endpoint_host(ep), allow_remote=allow_remote, what="load target")
        processes = spec.processes if processes_known else 1
        sink = self._sink(index)
        try:
            recorder = Recorder(sink, index, env.events.request.fire, spec.protocol.upper())
            seed = opts.mailstorm_seed
            factory = MessageFactory(spec, run_id=opts.mailstorm_run_id, worker=index, seed=seed)
            submitters = _submitters(spec, endpoints)
            common = {"index": index, "processes": processes, "factory": factory, "recorder": recorder}
            driver = (
                ClosedDriver(spec, submitters=submitters, **common)
                if spec.closed
                else OpenDriver(spec, seed=seed, submitters=submitters, **common)
            )
            _running.add(driver)
            try:
                driver.run()
            finally:
                _running.discard(driver)
        finally:
            sink.close()
        return {"submitted": recorder.submitted, "accepted": recorder.accepted, "dropped": recorder.dropped}
