"""One run, from a validated scenario to an exit code: the lifecycle and nothing else.

    make runs/<time>-<name>/ (scenario.yaml resolved, slo.json, run.json, ledger/, logs/)
    -> fake ESP (its own process) -> [chaos proxy] -> target (the SUT, its own processes)
    -> load (Locust, its own processes) + chaos timeline + probes, progress from the ledgers
    -> load done -> drain (every id the SUT accepted seen at the ESP, or its queue empty, or the deadline)
    -> stop in order: load, timeline, probes, target, proxy, ESP; then any descendant left (none should be)
    -> mailstorm.reports.build(run_dir) -> exit 0 (SLOs held) / 1 (breached)

The same stop path runs on Ctrl-C, SIGTERM and when a part dies, so no child outlives the run and every
ledger is closed. Children are tracked by pid and start time while the run goes
(mailstorm.harness.descendants),
and whatever is still alive at the end is terminated, then killed: a launcher that forgot a grandchild
does not leave it running. Exit codes: 0/1 from the verdict, 2 bad input, 3 the harness failed, 130/143
interrupted.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

import mailstorm.reports
from mailstorm.errors import (
    EXIT_HARNESS_FAILED,
    EXIT_OK,
    EXIT_SLO_BREACHED,
    ConfigError,
    HarnessError,
    MailstormError,
    TargetNotAllowed,
    UserError,
)
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.chaosproxy.proxy import ChaosProxy
from mailstorm.harness.descendants import Descendants
from mailstorm.harness.esp_setup import esp_limits, esp_process, esp_security
from mailstorm.harness.probes import Prober, resolve_probes
from mailstorm.harness.progress import LedgerTail, LiveStats, Progress
from mailstorm.harness.scenario import INVERSE_ACTIONS, Scenario
from mailstorm.harness.targets.base import REGISTRY, Actionable, Alive, Endpoint, QueueSampler, TargetContext
from mailstorm.harness.timeline import Timeline
from mailstorm.ledger import Kind, LedgerWriter
from mailstorm.netguard import check_address
from mailstorm.ports import free_port
from mailstorm.scenarios.launch import LoadRun
from mailstorm.yamlload import Document

TICK_S = 0.25  # main loop period: progress, watchdog, drain check
QUEUE_POLL_S = 1.0  # a target's queue depth may cost a subprocess (postqueue -j): not every tick
HURRY_S = 6.0  # after a signal: how long the parts get to stop by themselves before they are killed
LOAD_GRACE_S = 30.0
LOAD_START_TIMEOUT_S = 60.0  # Locust needs a few seconds to import and start; a minute means it is stuck
EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Interrupted(BaseException):
    """Raised in the main thread by the SIGINT/SIGTERM handler (a BaseException, like KeyboardInterrupt,
    so no ``except Exception`` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PartDied(HarnessError):
    """A part of the harness (ESP, load, proxy) stopped when it should not have: exit 3."""


class TargetDied(MailstormError):
    """The SUT died without the timeline killing it: a finding about the SUT, so the run fails (exit 1)
    after its reports are built."""


def derive_seed(seed: int, component: str) -> int:
    """Each component's own seed, derived from the scenario's: same scenario seed, same decisions."""
    digest = hashlib.sha256(f"{seed}:{component}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def make_run_dir(out: Path, name: str, now: datetime | None = None) -> Path:
    """``out/<YYYYmmdd-HHMMSS>-<name>``, with ``-2``, ``-3``... when a run of that name started the same
    second."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    base = out / f"{stamp}-{name}"
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"--out {out}: cannot make the run directory: {exc.strerror or exc}") from None
        return candidate
    raise HarnessError(f"cannot make a run directory under {out}")


def _target_hosts(spec: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    """Every address a target spec names (its ``host``, its ``endpoints`` as HOST:PORT or URLs), so the
    loopback check runs before anything starts, in ``validate`` too, not only when the target starts."""
    out: list[tuple[tuple[str | int, ...], str, str]] = []
    host = getattr(spec, "host", None)
    if isinstance(host, str):
        out.append((("target", "host"), host, "target address"))
    for i, endpoint in enumerate(getattr(spec, "endpoints", None) or ()):
        text = str(endpoint)
        name = urlsplit(text).hostname if "://" in text else text.rpartition(":")[0].strip("[]")
        out.append((("target", "endpoints", i), name or "", "target address"))
    return out


class Run:
    """Carries out ``scenario``; ``execute()`` returns the exit code and leaves ``run_dir`` complete."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        out: Path = Path("runs"),
        allow_remote: bool = False,
        document: Document | None = None,
        progress: bool = True,
    ) -> None:
        self.scenario = scenario
        self.out = out
        # Remote traffic needs both the file and the command line.
        self.allow_remote = bool(allow_remote and scenario.allow_remote)
        self.document = document
        self.show_progress = progress
        self.run_dir: Path | None = None
        self.stats = LiveStats()
        self.reason = "completed"
        self.verdict: Any = None
        self._esp: EspProcess | None = None
        self._proxy: ChaosProxy | None = None
        self._target: Any = None
        self._load: LoadRun | None = None
        self._timeline: Timeline | None = None
        self._prober: Prober | None = None
        self._writer: LedgerWriter | None = None
        self._tail: LedgerTail | None = None
        self._descendants = Descendants()
        self._phase = "start"
        self._t0 = time.monotonic()
        self._endpoints: list[Endpoint] = []
        esp = scenario.esp
        # What the ESP does from the start, shown beside the timeline's windows as they open and close.
        self._standing_faults = [f"esp:{f.name or f.type}" for f in esp.faults]
        if esp.profile is not None or esp.rate is not None:
            rate = f" {esp.rate:g}/s" if esp.rate is not None else ""
            self._standing_faults.insert(0, f"profile {esp.profile or 'generic-smtp'}{rate}")

    # -- checks before anything starts -----------------------------------------------------------------

    def preflight(self) -> None:
        """Every check that needs no process: the target knows the timeline's actions, addresses allowed."""
        sc = self.scenario
        hosts = [(("esp", "bind"), sc.esp.bind, "esp.bind")]
        hosts += [
            (("probes", i, "url"), urlsplit(p.url).hostname or "", "probe URL")
            for i, p in enumerate(sc.probes)
            if p.url
        ]
        hosts += _target_hosts(sc.target)
        for loc, host, what in hosts:
            try:
                check_address(host, allow_remote=self.allow_remote, what=what)
            except TargetNotAllowed as exc:
                raise self._config_error(loc, str(exc)) from None
        try:
            self.esp_limits = esp_limits(sc.esp)
        except ConfigError as exc:
            raise self._config_error(("esp", "profile"), str(exc)) from None
        for field in ("tls_cert", "tls_key"):  # the ESP would refuse them at start: say so before anything
            path = getattr(sc.esp, field)
            if path is not None and not Path(path).is_file():
                raise self._config_error(("esp", field), f"{path}: no such file")
        target = REGISTRY[sc.target.kind](sc.target)
        wanted = [(i, s.target) for i, s in enumerate(sc.chaos) if s.target is not None]
        if wanted:
            known = target.actions() if isinstance(target, Actionable) else frozenset()
            for i, action in wanted:
                needed = [action.action]
                if sc.chaos[i].for_ is not None:
                    needed.append(INVERSE_ACTIONS[action.action])
                for name in needed:
                    if name not in known:
                        msg = (
                            f"target kind {sc.target.kind!r} has no action {name!r} "
                            f"(it knows: {', '.join(sorted(known)) or 'none'})"
                        )
                        raise self._config_error(("chaos", i, "target"), msg)
        self._target = target

    def _config_error(self, loc: tuple[str | int, ...], message: str) -> UserError:
        if self.document is not None:
            return self.document.error_at(loc, message)
        return UserError(f"{'.'.join(map(str, loc))}: {message}")

    # -- the run -----------------------------------------------------------------------------------------

    def execute(self) -> int:
        self.preflight()
        sc = self.scenario
        self.run_dir = make_run_dir(self.out, sc.name)
        run_id = self.run_dir.name
        self.ledger_dir = self.run_dir / "ledger"
        self.logs_dir = self.run_dir / "logs"
        self.ledger_dir.mkdir()
        self.logs_dir.mkdir()
        (self.run_dir / "scenario.yaml").write_text(
            yaml.safe_dump(sc.resolved(), sort_keys=False, allow_unicode=True)
        )
        (self.run_dir / "slo.json").write_text(sc.slo.model_dump_json(indent=2) + "\n")
        self.info: dict[str, Any] = {
            "run_id": run_id,
            "name": sc.name,
            "seed": sc.seed,
            "started_ns": time.time_ns(),
            "duration_s": sc.duration,
            "drain_deadline_s": sc.drain_deadline,
            "target": sc.target.kind,
            "report": sc.reports.model_dump(mode="json"),
            "esp_limits": self.esp_limits,
            "status": "running",
            "argv": sys.argv,
            "host": socket.gethostname(),
            "user": getpass.getuser(),
            "python": platform.python_version(),
            "pid": os.getpid(),
        }
        self._security = esp_security(sc.esp, self.run_dir)
        if self._security.ca is not None:
            # The one file the SUT must trust (the ESP writes it at start); said before the run starts.
            self.info["esp_ca"] = str(self._security.ca)
            ca = self._security.ca
            print(f"mailstorm: fake ESP TLS {sc.esp.tls}; CA certificate {ca}", file=sys.stderr)
        self._write_info()
        self._writer = LedgerWriter(self.ledger_dir, "timeline")
        self._tail = LedgerTail(self.ledger_dir)
        code: int | None = None  # set when the run's outcome, not the verdict, decides the exit code
        failure: str | None = None
        with self._signals(), self._progress() as progress:
            try:
                self._start_parts(run_id)
                self._load_phase(progress)
                self._drain_phase(progress)
            except Interrupted as exc:
                self.reason = f"interrupted ({exc})"
                code = EXIT_INTERRUPTED.get(exc.signum, 130)
            except TargetDied as exc:
                self.reason = failure = str(exc)
            except MailstormError as exc:
                self.reason = failure = f"failed: {exc}"
                code = exc.exit_code
            except Exception as exc:  # a bug in a part: stop everything, say what, exit 3
                self.reason = failure = f"failed: {type(exc).__name__}: {exc}"
                code = EXIT_HARNESS_FAILED
            finally:
                self._phase = "stop"
                self._stop_all(hurry=code is not None and code in EXIT_INTERRUPTED.values())
                self._finish_ledger()
        try:
            verdict_code = self._report(complete=code is None and failure is None)
        except Exception as exc:
            if code is None and failure is None:
                raise
            # The run already failed; a report of a broken run is a bonus, its absence not a new error.
            sys.stderr.write(f"mailstorm: no report: {type(exc).__name__}: {exc}\n")
            verdict_code = EXIT_SLO_BREACHED
        if code is None:
            # A target that died unexpectedly is a finding about the SUT: the run fails whatever the SLOs say.
            code = max(verdict_code, EXIT_SLO_BREACHED) if failure is not None else verdict_code
        self.info.update(status="done", exit_code=code)
        self._write_info()
        if failure is not None:
            sys.stderr.write(f"mailstorm: {self.reason}\n")
        return code

    def _new_esp(self, smtp_port: int | None, http_port: int | None, control_port: int | None) -> EspProcess:
        return esp_process(
            self.scenario.esp,
            seed=derive_seed(self.scenario.seed, "esp"),
            run_dir=self.run_dir,
            ledger_dir=self.ledger_dir,
            log_path=self.logs_dir / "esp.log",
            ports=(smtp_port, http_port, control_port),
        )

    def _crash_esp(self) -> str:
        """SIGKILL the fake ESP (all its workers): an ESP crash, for an esp_outage in crash mode."""
        pid = self._esp.pid
        self._esp.kill()
        return f"fake ESP pid {pid} killed"

    def _restart_esp(self) -> str:
        """A new fake ESP on the same ports and ledger, as a crashed ESP comes back (its start-up faults
        too; faults added at run time died with it)."""
        old = self._esp
        self._esp = self._new_esp(old.smtp_port, old.http_port, old.control_port)
        self._esp.start()
        self.info["esp"]["pid"] = self._esp.pid
        return f"fake ESP restarted (pid {self._esp.pid})"

    def _start_parts(self, run_id: str) -> None:
        sc, writer = self.scenario, self._writer
        assert writer is not None
        esp = sc.esp
        http_port = None if esp.http_port is None else (esp.http_port or free_port())
        self._esp = self._new_esp(esp.smtp_port, http_port, esp.control_port)
        self._esp.start()
        relay_to = (self._esp.smtp_host, self._esp.smtp_port)
        if any(s.network is not None for s in sc.chaos):
            self._proxy = ChaosProxy(
                relay_to, seed=derive_seed(sc.seed, "proxy"), allow_remote=self.allow_remote
            ).start()
            relay_to = (self._proxy.host, self._proxy.port)
        self.info["esp"] = {
            "smtp": f"{self._esp.smtp_host}:{self._esp.smtp_port}",
            "http": self._esp.http_url,
            "control": self._esp.control_url,
            "pid": self._esp.pid,
            "tls": esp.tls,
            "ca": self.info.get("esp_ca"),
        }
        if self._proxy is not None:
            self.info["proxy"] = f"{self._proxy.host}:{self._proxy.port}"
        self._write_info()
        ctx = TargetContext(
            run_dir=self.run_dir,
            ledger_dir=self.ledger_dir,
            seed=derive_seed(sc.seed, "target"),
            esp_smtp=relay_to,
            esp_http=self._esp.http_url,
            allow_remote=self.allow_remote,
            esp_security=self._security,
        )
        self._endpoints = list(self._target.start(ctx))
        if not self._endpoints:
            raise HarnessError(f"target {sc.target.kind!r} started but named no endpoint for the load")
        for ep in self._endpoints:
            host = ep.host if ep.kind == "smtp" else (urlsplit(ep.url or "").hostname or ep.host)
            check_address(host, allow_remote=self.allow_remote, what="target endpoint")
        self.info["endpoints"] = [str(e) for e in self._endpoints]
        self._write_info()
        self._descendants.scan(force=True)
        self._phase = "load"
        self._load = LoadRun(
            sc.load,
            self._endpoints,
            self.ledger_dir,
            run_id=run_id,
            seed=derive_seed(sc.seed, "load"),
            log_dir=self.logs_dir,
            allow_remote=self.allow_remote,
        )
        self._t0 = time.monotonic()
        self._load.start()
        self._timeline = Timeline(
            sc.chaos,
            writer=writer,
            esp=lambda: self._esp.control,
            esp_lifecycle=(self._crash_esp, self._restart_esp),
            target=self._target,
            target_kind=sc.target.kind,
            proxy=self._proxy,
        )
        self._prober = Prober(resolve_probes(sc.probes, self._target, sc.target.kind), writer)
        self._prober.start()

    def _await_load(self, progress: Progress) -> None:
        """Start the timeline at the load's zero: the intended time of its first arrival.

        Locust takes a second or two to start, and ``at`` in the scenario means "this long into the
        load", so the clock starts when the load's own schedule does, not when its processes were spawned.
        """
        writer = self._writer
        while self.stats.load_t0_ns is None:
            self._tick(progress)
            if not self._load.alive():
                return  # the load phase reports how it ended
            if time.monotonic() - self._t0 > LOAD_START_TIMEOUT_S:
                raise PartDied(
                    f"the load sent nothing within {LOAD_START_TIMEOUT_S:g}s (see logs/locust*.log)"
                )
            time.sleep(TICK_S)  # the main loop's period
        t0_ns = self.stats.load_t0_ns
        self._t0 = time.monotonic() - (time.time_ns() - t0_ns) / 1e9
        # run.started is the run's zero, the one the reports measure from, so it carries the load's zero
        # as its time (written now, dated then); ``prepared`` says when the parts began to start.
        sc = self.scenario
        started = {"run_id": self.info["run_id"], "name": sc.name, "seed": sc.seed, "duration_s": sc.duration}
        started |= {"prepared": self.info["started_ns"]}
        writer.write_records([{"t": t0_ns, "k": str(Kind.RUN_STARTED), "src": writer.source, **started}])
        writer.write(Kind.RUN_PHASE, phase="load", t0=t0_ns)
        self.info["load_t0_ns"] = t0_ns
        self._write_info()
        self._timeline.start(self._t0)

    # -- phases -------------------------------------------------------------------------------------------

    def _load_phase(self, progress: Progress) -> None:
        sc = self.scenario
        self._await_load(progress)
        hard_stop = sc.duration + sc.load.timeout_s + LOAD_GRACE_S
        while True:
            self._tick(progress)
            elapsed = time.monotonic() - self._t0
            if not self._load.alive():
                code = self._load.wait(5.0)
                if code != 0:
                    raise PartDied(f"load generator exited with code {code} at {elapsed:.1f}s (see logs/)")
                break
            if elapsed > hard_stop:
                raise PartDied(f"load generator still running {elapsed:.0f}s after a {sc.duration:g}s load")
            time.sleep(TICK_S)  # the main loop's period; the work is polling real conditions
        # Steps whose window ends exactly at the end of the load must still close before the drain.
        if self._timeline is not None:
            while self._timeline.done < len(self._timeline.events) and (
                time.monotonic() - self._t0 <= sc.duration + 2.0
            ):
                self._tick(progress)
                time.sleep(TICK_S)

    def _drain_phase(self, progress: Progress) -> None:
        sc = self.scenario
        self._writer.write(Kind.RUN_PHASE, phase="drain")
        self._phase = "drain"
        deadline = time.monotonic() + sc.drain_deadline
        empty_polls = 0
        next_queue = 0.0
        while True:
            self._tick(progress)
            if self.stats.backlog == 0:
                self.reason = "completed: drained"
                return
            now = time.monotonic()
            if isinstance(self._target, QueueSampler) and now >= next_queue:
                next_queue = now + QUEUE_POLL_S
                depth = self._target.queue_depth()
                idle = time.time_ns() - self.stats.last_delivery_ns > QUEUE_POLL_S * 1e9
                # An empty queue twice in a row, with nothing reaching the ESP meanwhile: the SUT holds
                # nothing more, whatever the ledgers still miss will not come.
                empty_polls = empty_polls + 1 if depth == 0 and idle else 0
                if empty_polls >= 2:
                    self.reason = "completed: target queue empty"
                    return
            if now >= deadline:
                self.reason = (
                    f"completed: drain deadline ({sc.drain_deadline:g}s) with {self.stats.backlog} pending"
                )
                return
            time.sleep(TICK_S)

    def _tick(self, progress: Progress) -> None:
        self.stats.feed(self._tail.poll())
        self._descendants.scan()
        faults = list(self._standing_faults)
        faults += self._timeline.active() if self._timeline is not None else []
        progress.update(self.stats, elapsed_s=time.monotonic() - self._t0, phase=self._phase, faults=faults)
        self._watchdog()

    def _watchdog(self) -> None:
        if self._timeline is not None and self._timeline.errors:
            raise HarnessError(self._timeline.errors[0])
        esp_down = self._timeline is not None and self._timeline.esp_down
        if self._esp is not None and not self._esp.alive() and not esp_down:
            raise PartDied(f"fake ESP died (see {self.logs_dir / 'esp.log'})")
        if self._proxy is not None and not self._proxy.alive():
            raise PartDied("chaos proxy stopped")
        if (
            isinstance(self._target, Alive)
            and not self._target.alive()
            and not self._target_down_on_purpose()
        ):
            at = time.monotonic() - self._t0
            raise TargetDied(f"target {self.scenario.target.kind!r} died unexpectedly at {at:.1f}s")

    def _target_down_on_purpose(self) -> bool:
        return self._timeline is not None and self._timeline.target_down

    # -- stopping -----------------------------------------------------------------------------------------

    def _stop_all(self, *, hurry: bool = False) -> None:
        """Stop every part that was started, each step guarded (one failing stop must not leave the next
        part running), then end whatever descendant is left.

        Normally in order (load, timeline, probes, target, proxy, ESP: the ESP last, so the SUT can finish
        what it relays). In a ``hurry`` (a signal: the user wants out) all parts stop at once and whatever
        has not exited after ``HURRY_S`` is killed, so every child is gone within 10 s.
        """
        steps = [
            ("load", lambda: self._load.stop() if self._load is not None else None),
            ("timeline", lambda: self._timeline.stop() if self._timeline is not None else None),
            ("probes", lambda: self._prober.stop() if self._prober is not None else None),
            ("target", lambda: self._target.stop() if self._target is not None else None),
            ("proxy", lambda: self._proxy.stop() if self._proxy is not None else None),
            ("esp", lambda: self._esp.stop() if self._esp is not None else None),
        ]
        if self._writer is not None:
            self._writer.write(Kind.RUN_PHASE, phase="stop")
        # Signals during the stop are not raised: the stop itself is the answer to them.
        self._stopping = True

        def guarded(name: str, stop) -> None:
            try:
                stop()
            except Exception as exc:
                sys.stderr.write(f"mailstorm: stopping {name} failed: {type(exc).__name__}: {exc}\n")

        if not hurry:
            for name, stop in steps:
                guarded(name, stop)
            self._reap(grace_s=3.0)
            return
        threads = [threading.Thread(target=guarded, args=step, daemon=True) for step in steps]
        for t in threads:
            t.start()
        deadline = time.monotonic() + HURRY_S
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._reap(grace_s=1.0)

    def _reap(self, *, grace_s: float) -> None:
        """End every process this run started that is still alive (a part left it behind)."""
        if left := self._descendants.reap(grace_s=grace_s):
            names = ", ".join(map(str, left))
            sys.stderr.write(f"mailstorm: ended {len(left)} process(es) left behind by a part: {names}\n")

    def _finish_ledger(self) -> None:
        self.stats.feed(self._tail.poll())
        self._writer.write(Kind.RUN_ENDED, reason=self.reason)
        self._writer.close()
        failed = self._timeline.action_failures if self._timeline is not None else []
        self.info.update(
            ended_ns=time.time_ns(), reason=self.reason, pending=self.stats.backlog, action_failures=failed
        )
        self._write_info()

    # -- the verdict --------------------------------------------------------------------------------------

    def _report(self, *, complete: bool) -> int:
        """Build the reports and return the exit code of their verdict; print the summary. The reports of
        a run that did not complete are written (they show how far it got) but give no verdict."""
        print(self.summary(), file=sys.stderr)
        self.verdict = mailstorm.reports.build(self.run_dir)
        passed = self.verdict.passed
        if not complete:
            print(f"no verdict: the run did not complete - reports in {self.run_dir}", file=sys.stderr)
            return EXIT_SLO_BREACHED
        self.info["verdict"] = "pass" if passed else "fail"
        for slo in self.verdict.slo:
            actual = "n/a" if slo.actual is None else f"{slo.actual:g}"
            mark = "ok  " if slo.passed else "FAIL"
            print(f"  {mark} {slo.name}: {actual} (target {slo.target:g} {slo.unit})", file=sys.stderr)
        print(f"verdict: {'PASS' if passed else 'FAIL'} - reports in {self.run_dir}", file=sys.stderr)
        return EXIT_OK if passed else EXIT_SLO_BREACHED

    def summary(self) -> str:
        s = self.stats
        lines = [
            f"run {self.run_dir.name}: {self.reason}",
            f"  offered {s.offered}, accepted by the SUT {s.accepted}, rejected {s.rejected}, "
            f"dropped {s.dropped}",
            f"  delivered to the ESP {s.delivered} (duplicates {s.duplicates}), bounced {s.bounced}, "
            f"not at the ESP {s.backlog}",
        ]
        failed = self._timeline.action_failures if self._timeline is not None else []
        lines += [f"  action failed: {f}" for f in failed]
        return "\n".join(lines)

    # -- plumbing -----------------------------------------------------------------------------------------

    def _write_info(self) -> None:
        path = self.run_dir / "run.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.info, indent=2, default=str) + "\n")
        os.replace(tmp, path)  # a reader never sees half a run.json

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Progress]:
        progress = Progress(self.scenario.name, self.scenario.duration, enabled=self.show_progress)
        with progress:
            yield progress

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM raise ``Interrupted`` in the main thread once; during the stop they are ignored
        (the stop is already the answer, and it is bounded)."""
        self._stopping = False
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: object) -> None:
            if not self._stopping:
                self._stopping = True
                raise Interrupted(signum)

        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)
