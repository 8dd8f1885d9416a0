"""One run, from a validated scenario to an exit code: the lifecycle and nothing else.

    make runs/<time>-<name>/ (scenario.yaml resolved, slo.json, run.json, ledger/, logs/, runner.lock)
    -> watchdog (its own process: ends what the run started if the runner dies, SIGKILL included)
    -> [chaos proxy: on every path, SMTP, HTTP APIs, webhooks] -> fake ESP (its own process)
    -> target (the SUT, its own processes)
    -> load (Locust, its own processes) + chaos timeline + probes, progress from the ledgers
    -> load done -> drain (every id the SUT accepted seen at the ESP, or its queue empty, or the deadline)
    -> stop in order: load, timeline, probes, target, proxy, ESP; then any descendant left (none should be)
    -> mailstorm.reports.build(run_dir) -> exit 0 (SLOs held) / 1 (breached)

The same stop path runs on Ctrl-C, SIGTERM and when a part dies, so no child outlives the run and every
ledger is closed. Children are tracked by pid and start time while the run goes
(mailstorm.harness.descendants), and whatever is still alive at the end is terminated, then killed: a
launcher that forgot a grandchild does not leave it running. When the runner itself is killed, its
children get SIGTERM from the kernel (mailstorm.deathsig) and the watchdog ends the rest
(mailstorm.harness.watchdog, mailstorm.harness.leftovers). Exit codes: mailstorm.errors (0/1 from the
verdict, 2 bad input, 3 the harness failed, 130/143 interrupted).
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
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
    EXIT_OK,
    EXIT_SLO_BREACHED,
    HarnessError,
    Interrupted,
    MailstormError,
    PartDied,
    TargetDied,
    UserError,
)
from mailstorm.harness.abort import ABORT_DRAIN_S, AbortJudge, Breach
from mailstorm.harness.alerts.stack import AlertStack, scrape_targets
from mailstorm.harness.analytics.watch import AnalyticsWatch
from mailstorm.harness.campaign.runner import Campaigns
from mailstorm.harness.chaosproxy.proxy import ChaosProxy
from mailstorm.harness.descendants import Descendants
from mailstorm.harness.esp_fleet import EspFleet
from mailstorm.harness.esp_setup import esp_security, proxied_url, webhook_keys
from mailstorm.harness.held import record_held
from mailstorm.harness.metrics import RunnerMetrics
from mailstorm.harness.partials import Partials, every_s
from mailstorm.harness.preflight import preflight
from mailstorm.harness.probes import Prober, resolve_probes
from mailstorm.harness.progress import FORGET_AFTER_S, LedgerTail, LiveStats, Progress, outcome_table
from mailstorm.harness.scenario import Scenario
from mailstorm.harness.targets.base import (
    Alive,
    Endpoint,
    QueueLister,
    QueueSampler,
    Target,
    TargetContext,
)
from mailstorm.harness.timeline import Timeline
from mailstorm.harness.watchdog import Watchdog, lifeline
from mailstorm.ledger import LedgerWriter, RunEnded, RunPhase, RunStarted
from mailstorm.netguard import check_address
from mailstorm.runinfo import RunInfo
from mailstorm.scenarios.launch import LoadRun
from mailstorm.yamlload import Document

TICK_S = 0.25  # main loop period: progress, parts alive, drain check
QUEUE_POLL_S = 1.0  # a target's queue depth may cost a subprocess (postqueue -j): not every tick
EMPTY_POLLS = 3  # empty listings in a row (QUEUE_POLL_S apart) that end a drain before the ledgers settle
HURRY_S = 6.0  # after a signal: how long the parts get to stop by themselves before they are killed
LOAD_GRACE_S = 30.0
LOAD_START_TIMEOUT_S = 60.0  # Locust needs a few seconds to import and start; a minute means it is stuck


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
        metrics: bool = True,
    ) -> None:
        self.scenario = scenario
        self.out = out
        # Remote traffic needs both the file and the command line.
        self.allow_remote = bool(allow_remote and scenario.allow_remote)
        self.document = document
        self.show_progress = progress
        self.run_dir: Path | None = None
        self.stats = LiveStats(forget_after_s=FORGET_AFTER_S)  # flat memory on a long run
        self._metrics = RunnerMetrics(self.stats) if metrics else None  # GET /metrics while the run goes
        self._judge = AbortJudge(scenario.slo, self.stats)  # the SLOs marked abort: true, judged live
        self.aborted: Breach | None = None
        self.reason = "completed"
        self.held: int | None = None  # messages the target listed as still held at the end of the drain
        self.verdict: Any = None
        self._fleet: EspFleet | None = None
        self._proxy: ChaosProxy | None = None
        self._proxy_writer: LedgerWriter | None = None
        self._webhook_urls: dict[str, str] = {}  # by ESP: the proxy's front for its webhooks
        self._target: Target | None = None
        self._load: LoadRun | None = None
        self._timeline: Timeline | None = None
        self._prober: Prober | None = None
        self._analytics = AnalyticsWatch(scenario.analytics, scenario.fleet[0].webhooks)
        self._alerts: AlertStack | None = None
        self._writer: LedgerWriter | None = None
        self._tail: LedgerTail | None = None
        self._descendants = Descendants()
        self._campaigns = Campaigns(scenario.campaign, derive_seed(scenario.seed, "campaign"))
        self._watchdog: Watchdog | None = None
        self._phase = "start"
        self._t0 = time.monotonic()
        self._endpoints: list[Endpoint] = []
        esp = scenario.fleet[0]
        # What the ESP does from the start, shown beside the timeline's windows as they open and close.
        self._standing_faults = [f"esp:{f.name or f.type}" for f in esp.faults]
        if esp.profile is not None or esp.rate is not None:
            rate = f" {esp.rate:g}/s" if esp.rate is not None else ""
            self._standing_faults.insert(0, f"profile {esp.profile or 'generic-smtp'}{rate}")

    # -- checks before anything starts -----------------------------------------------------------------

    def preflight(self) -> None:
        """Every check that needs no process (mailstorm.harness.preflight); keeps the target it built."""
        checked = preflight(
            self.scenario, allow_remote=self.allow_remote, campaigns=self._campaigns, error=self._config_error
        )
        self._target, self._alerts = checked.target, checked.alerts
        self.esp_limits, self.esps_limits = checked.esp_limits, checked.esps_limits

    def _config_error(self, loc: tuple[str | int, ...], message: str) -> UserError:
        if self.document is not None:
            return self.document.error_at(loc, message)
        return UserError(f"{'.'.join(map(str, loc))}: {message}")

    # -- the run -----------------------------------------------------------------------------------------

    def execute(self) -> int:
        self.preflight()
        self.run_dir = make_run_dir(self.out, self.scenario.name)
        logs = self.run_dir / "logs"
        logs.mkdir()
        # Nothing of the run outlives the runner, however it ends (mailstorm.harness.watchdog).
        with lifeline(self.run_dir, logs / "watchdog.log") as self._watchdog:
            self._descendants.spare(self._watchdog.pid)  # it must outlive the runner's own reaping
            return self._execute()

    def _execute(self) -> int:
        sc = self.scenario
        run_id = self.run_dir.name
        self.ledger_dir = self.run_dir / "ledger"
        self.logs_dir = self.run_dir / "logs"
        self.ledger_dir.mkdir()
        # report.html/json rebuilt, marked partial, while the run goes (mailstorm.harness.partials)
        self._partials = Partials(
            self.run_dir, every=every_s(sc.reports, sc.duration), duration_s=sc.duration
        )
        (self.run_dir / "scenario.yaml").write_text(
            yaml.safe_dump(sc.resolved(), sort_keys=False, allow_unicode=True)
        )
        (self.run_dir / "slo.json").write_text(sc.slo.model_dump_json(indent=2) + "\n")
        self._security = esp_security(sc.fleet[0], self.run_dir)  # one for all: the scenario checks
        ca = self._security.ca
        self.info = RunInfo(
            run_id=run_id,
            name=sc.name,
            seed=sc.seed,
            started_ns=time.time_ns(),
            duration_s=sc.duration,
            drain_deadline_s=sc.drain_deadline,
            target=sc.target.kind,
            report=sc.reports.model_dump(mode="json"),
            esp_limits=self.esp_limits,
            esps_limits=self.esps_limits,
            esp_ca=str(ca) if ca is not None else None,
            webhook_keys=webhook_keys(sc.fleet, self.run_dir),
            status="running",
            argv=sys.argv,
            host=socket.gethostname(),
            user=getpass.getuser(),
            python=platform.python_version(),
            pid=os.getpid(),
        )
        if self._metrics is not None:
            self.info.metrics = self._metrics.start().address
        if ca is not None:
            # The one file the SUT must trust (the ESP writes it at start); said before the run starts.
            print(f"mailstorm: fake ESP TLS {sc.fleet[0].tls}; CA certificate {ca}", file=sys.stderr)
        if self.info.webhook_keys is not None:  # what a receiver verifying SendGrid's webhooks needs
            key = self.info.webhook_keys.sendgrid_public_key
            print(f"mailstorm: webhook keys in run.json; SendGrid verification key {key}", file=sys.stderr)
        self._write_info()
        self._writer = LedgerWriter(self.ledger_dir, "timeline")
        self._tail = LedgerTail(self.ledger_dir)
        code: int | None = None  # set when the run's outcome, not the verdict, decides the exit code
        failure: str | None = None
        finding: TargetDied | None = None  # a failure about the SUT: the code is the verdict's, at least
        interrupted = False
        with self._signals(), self._progress() as progress:
            try:
                self._start_parts(run_id)
                self._load_phase(progress)
                self._drain_phase(progress)
                if self.aborted is not None:
                    self.reason = f"aborted: {self.aborted.detail}; {self.reason.removeprefix('completed: ')}"
                self._record_held()
                self._settle_analytics(progress)
            except Interrupted as exc:
                self.reason = f"interrupted ({exc})"
                code, interrupted = exc.exit_code, True
            except TargetDied as exc:
                self.reason = failure = str(exc)
                finding = exc
            except MailstormError as exc:
                self.reason = failure = f"failed: {exc}"
                code = exc.exit_code
            except Exception as exc:  # a bug in a part: stop everything, say what, exit as the harness
                self.reason = failure = f"failed: {type(exc).__name__}: {exc}"
                code = HarnessError.exit_code
            finally:
                self._phase = "stop"
                self._stop_all(hurry=interrupted)
                if self._watchdog is not None:  # every part is stopped: from here the runner leaves nothing
                    self._watchdog.disarm()
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
            code = max(verdict_code, finding.exit_code) if finding is not None else verdict_code
        self.info.status, self.info.exit_code = "done", code
        self._write_info()
        if failure is not None:
            sys.stderr.write(f"mailstorm: {self.reason}\n")
        return code

    def _restart_esp(self, name: str | None = None) -> str:
        detail = self._fleet.restart(name)
        self._record_esps()
        return detail

    def _record_esps(self) -> None:
        fleet = self._fleet
        self.info.esp = fleet.info(fleet.first)
        self.info.esps = [fleet.info(n) for n in fleet.names] if fleet.several else None
        self.info.esp_hosts = fleet.remote.info() if fleet.remote is not None else None
        self._write_info()

    def _start_parts(self, run_id: str) -> None:
        sc, writer = self.scenario, self._writer
        assert writer is not None
        esp = sc.fleet[0]
        self._fleet = EspFleet(
            sc.fleet,
            seed=lambda part: derive_seed(sc.seed, part),
            run_dir=self.run_dir,
            ledger_dir=self.ledger_dir,
            logs_dir=self.logs_dir,
            allow_remote=self.allow_remote,
        )
        _, http_port, _ = self._fleet.ports[self._fleet.first]
        scheme = "https" if esp.tls_on else "http"  # the ESP's APIs are https only when it speaks TLS
        esp_http = f"{scheme}://127.0.0.1:{http_port}" if http_port is not None else None
        if any(s.network is not None for s in sc.chaos):
            # Before the ESPs: they must post their webhooks to the proxy, which must know their ports.
            self._start_proxy()
            if http_port is not None:
                esp_http = "{}://{}:{}".format(scheme, *self._proxy.address(self._fleet.path("http")))
        fmt = esp.webhooks.format if esp.webhooks is not None else None
        if (receiver := self._analytics.wire(self._target, fmt)) is not None:  # analytics.receiver: target
            self._webhook_urls[self._fleet.first] = receiver
        if (hosts := self._fleet.remote) is not None:  # esp.hosts: their fake ESPs join; URL and token first
            self.info.join = {"url": hosts.serve(), "token": hosts.token}
            self._write_info()
            print(f"mailstorm: waiting for fake ESPs to join at {self.info.join['url']}", file=sys.stderr)
        self._fleet.start(webhook_urls=self._webhook_urls)
        relays = self._fleet.relays(self._proxy)
        if hosts is not None:
            esp_http = hosts.http_url()
        self._record_esps()
        if self._proxy is not None:
            self.info.proxy = {p: "{}:{}".format(*self._proxy.address(p)) for p in self._proxy.paths}
        self._write_info()
        ctx = TargetContext(
            run_dir=self.run_dir,
            ledger_dir=self.ledger_dir,
            seed=derive_seed(sc.seed, "target"),
            esp_smtp=relays[0],
            esp_relays=relays,
            esp_http=esp_http,
            allow_remote=self.allow_remote,
            esp_security=self._security,
            esp_spread=hosts is not None,
            env=self._analytics.target_env(self.info.webhook_keys),
        )
        self._endpoints = list(self._target.start(ctx))
        if not self._endpoints:
            raise HarnessError(f"target {sc.target.kind!r} started but named no endpoint for the load")
        for ep in self._endpoints:
            host = ep.host if ep.kind == "smtp" else (urlsplit(ep.url or "").hostname or ep.host)
            check_address(host, allow_remote=self.allow_remote, what="target endpoint")
        self.info.endpoints = [str(e) for e in self._endpoints]
        if self._alerts is not None:
            runner = self._metrics.url if self._metrics is not None else None
            scrape = scrape_targets(runner, self._fleet.scrapes(), self._target)
            self.info.alerts = self._alerts.start(self.run_dir, scrape)
        self._write_info()
        self._descendants.scan(force=True)
        self._campaigns.start(self.run_dir, writer, self._target, self._endpoints)
        self._phase = "load"
        self._load = sc.load and LoadRun(
            sc.load,
            self._endpoints,
            self.ledger_dir,
            run_id=run_id,
            seed=derive_seed(sc.seed, "load"),
            log_dir=self.logs_dir,
            allow_remote=self.allow_remote,
        )
        self._t0 = time.monotonic()
        if self._load is not None:
            self._load.start()
        else:  # the campaigns are the load: the timeline's zero is now
            self.stats.load_t0_ns = time.time_ns()
        self._timeline = Timeline(
            sc.chaos,
            writer=writer,
            esp=self._fleet.control,
            esp_lifecycle=(self._fleet.crash, self._restart_esp),
            target=self._target,
            target_kind=sc.target.kind,
            proxy=self._proxy,
        )
        probes = resolve_probes(sc.probes, self._target, sc.target.kind, allow_remote=self.allow_remote)
        self._prober = Prober(probes, writer)
        self._prober.start()
        self._analytics.start(self._target, writer, allow_remote=self.allow_remote)

    def _start_proxy(self) -> None:
        """The chaos proxy on every path between the SUT and each ESP (SMTP, the HTTP APIs, the webhook
        posts back), recording what its toxics did in ledger/proxy.jsonl."""
        sc, fleet = self.scenario, self._fleet
        self._proxy_writer = LedgerWriter(self.ledger_dir, "proxy")
        self._proxy = ChaosProxy(
            fleet.proxy_paths(),
            seed=derive_seed(sc.seed, "proxy"),
            allow_remote=self.allow_remote,
            ledger=self._proxy_writer,
        ).start()
        self._webhook_urls = {
            name: proxied_url(spec.webhooks.url, self._proxy.address(fleet.path("webhooks", name)))
            for name, spec in fleet.specs.items()
            if spec.webhooks is not None
        }

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
        sc, info = self.scenario, self.info
        started = RunStarted(
            run_id=info.run_id, name=sc.name, seed=sc.seed, duration_s=sc.duration, prepared=info.started_ns
        )
        writer.write(started, t=t0_ns)
        writer.write(RunPhase(phase="load", t0=t0_ns))
        self.info.load_t0_ns = t0_ns
        self._write_info()
        self._timeline.start(self._t0)

    # -- phases -------------------------------------------------------------------------------------------

    def _load_phase(self, progress: Progress) -> None:
        sc = self.scenario
        self._await_load(progress)
        hard_stop = sc.duration + (sc.load.timeout_s if sc.load else 0) + LOAD_GRACE_S
        while True:
            self._tick(progress)
            elapsed = time.monotonic() - self._t0
            if self._load is None:
                if elapsed >= sc.duration:
                    break
            elif not self._load.alive():
                code = self._load.wait(5.0)
                if code != 0:
                    raise PartDied(f"load generator exited with code {code} at {elapsed:.1f}s (see logs/)")
                break
            if elapsed > hard_stop:
                raise PartDied(f"load generator still running {elapsed:.0f}s after a {sc.duration:g}s load")
            if (breach := self._judge.check(time.time_ns())) is not None:
                self._abort(breach, elapsed)
                return
            time.sleep(TICK_S)  # the main loop's period; the work is polling real conditions
        # Steps whose window ends exactly at the end of the load must still close before the drain.
        if self._timeline is not None:
            while self._timeline.done < len(self._timeline.events) and (
                time.monotonic() - self._t0 <= sc.duration + 2.0
            ):
                self._tick(progress)
                time.sleep(TICK_S)

    def _abort(self, breach: Breach, elapsed: float) -> None:
        """An SLO marked abort: true cannot recover: say so on the timeline, stop the load; the drain
        that follows is short (ABORT_DRAIN_S)."""
        self.aborted = breach
        self._writer.write(breach.record(round(elapsed, 1)))
        sys.stderr.write(f"mailstorm: aborting at {elapsed:.1f}s: {breach.detail}\n")
        self._load.stop()

    def _drain_phase(self, progress: Progress) -> None:
        sc = self.scenario
        self._writer.write(RunPhase(phase="drain"))
        self._phase = "drain"
        drain_s = sc.drain_deadline if self.aborted is None else min(sc.drain_deadline, ABORT_DRAIN_S)
        deadline = time.monotonic() + drain_s
        empty_polls = 0
        next_queue = 0.0
        while True:
            self._tick(progress)
            if self.stats.backlog == 0 and self._campaigns.settled():
                self.reason = "completed: drained"
                return
            now = time.monotonic()
            if isinstance(self._target, QueueSampler) and now >= next_queue:
                next_queue = now + QUEUE_POLL_S
                depth = self._target.queue_depth()
                idle = time.time_ns() - self.stats.last_delivery_ns > QUEUE_POLL_S * 1e9
                # An empty queue on EMPTY_POLLS polls in a row, with nothing reaching the ESP meanwhile:
                # the SUT holds nothing more, whatever the ledgers still miss will not come.
                empty_polls = empty_polls + 1 if depth == 0 and idle else 0
                if empty_polls >= EMPTY_POLLS:
                    self.reason = "completed: target queue empty"
                    return
            if now >= deadline:
                self.reason = (
                    f"completed: drain deadline ({drain_s:g}s) with {self.stats.backlog} not at the ESP"
                )
                return
            time.sleep(TICK_S)

    def _record_held(self) -> None:
        """At the end of the drain, a target that can list what it still holds does (mailstorm.harness.held),
        so the reports rebuilt from the ledgers alone say the same as the console."""
        if not isinstance(self._target, QueueLister):
            return
        held = record_held(self._target, self._writer, self.scenario.target.kind)
        if held is None:
            sys.stderr.write("mailstorm: the target's queue could not be listed at the end of the drain\n")
            return
        self.held = held
        self.stats.feed(self._tail.poll())

    def _settle_analytics(self, progress: Progress) -> None:
        """The ESP's webhook retries go on after the mail drained: wait for them (within the drain
        deadline), then read the SUT's final counts."""
        if not self._analytics.active:
            return
        deadline = time.monotonic() + self.scenario.drain_deadline
        while not self._analytics.settled() and time.monotonic() < deadline:
            self._tick(progress)
            time.sleep(TICK_S)  # the main loop's period
        self._analytics.final_poll()

    def _tick(self, progress: Progress) -> None:
        records = list(self._tail.poll())
        self.stats.feed(records)
        self._analytics.feed(records)
        self._judge.feed(records)
        self._campaigns.feed(records)
        if self.info.load_t0_ns is not None:
            self._campaigns.tick(time.monotonic() - self._t0)
        self._descendants.scan()
        self._partials.tick(time.monotonic() - self._t0)
        faults = list(self._standing_faults)
        faults += self._timeline.active() if self._timeline is not None else []
        progress.update(self.stats, elapsed_s=time.monotonic() - self._t0, phase=self._phase, faults=faults)
        if self._metrics is not None:
            self._metrics.faults, self._metrics.phase = faults, self._phase
        self._check_parts()

    def _check_parts(self) -> None:
        """A part that died (or a timeline that failed) ends the run."""
        if self._timeline is not None and self._timeline.errors:
            raise HarnessError(self._timeline.errors[0])
        if self._fleet is not None:
            self._fleet.check(down=self._timeline.esps_down if self._timeline is not None else ())
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
            ("partial reports", self._partials.stop),
            # A normal stop first waits (bounded) for the alerts still firing to resolve.
            ("alerts", lambda: self._alerts and self._alerts.stop(wait_resolved=not hurry)),
            ("load", lambda: self._load.stop() if self._load is not None else None),
            ("timeline", lambda: self._timeline.stop() if self._timeline is not None else None),
            ("probes", lambda: self._prober.stop() if self._prober is not None else None),
            ("analytics", self._analytics.stop),
            ("campaigns", self._campaigns.stop),
            ("target", lambda: self._target.stop() if self._target is not None else None),
            ("proxy", self._stop_proxy),
            ("esp", lambda: self._fleet.stop() if self._fleet is not None else None),
            ("metrics", lambda: self._metrics.stop() if self._metrics is not None else None),
        ]
        if self._writer is not None:
            self._writer.write(RunPhase(phase="stop"))
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

    def _stop_proxy(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
        if self._proxy_writer is not None:
            self._proxy_writer.close()

    def _reap(self, *, grace_s: float) -> None:
        """End every process this run started that is still alive (a part left it behind)."""
        if left := self._descendants.reap(grace_s=grace_s):
            names = ", ".join(map(str, left))
            sys.stderr.write(f"mailstorm: ended {len(left)} process(es) left behind by a part: {names}\n")

    def _finish_ledger(self) -> None:
        self.stats.feed(self._tail.poll(final=True))
        self._writer.write(RunEnded(reason=self.reason))
        self._writer.close()
        failed = self._timeline.action_failures if self._timeline is not None else []
        info = self.info
        if self._fleet is not None and self._fleet.remote is not None:  # their clocks, measured to the end
            info.esp_hosts = self._fleet.remote.info()
        info.ended_ns, info.reason, info.outcomes, info.action_failures = (
            time.time_ns(),
            self.reason,
            self.stats.fates.counts(),
            failed,
        )
        self._write_info()

    # -- the verdict --------------------------------------------------------------------------------------

    def _report(self, *, complete: bool) -> int:
        """Build the reports and return the exit code of their verdict; print the summary, the verdict
        and, last, the outcome table (the live counts, equal to report.md's). The reports of a run that
        did not complete are written (they show how far it got) but give no verdict."""
        print(self.summary(), file=sys.stderr)
        try:
            self.verdict = mailstorm.reports.build(self.run_dir)
            passed = self.verdict.passed
            if not complete:
                print(f"no verdict: the run did not complete - reports in {self.run_dir}", file=sys.stderr)
                return EXIT_SLO_BREACHED
            self.info.verdict = "pass" if passed else "fail"
            for slo in self.verdict.slo:
                actual = "n/a" if slo.actual is None else f"{slo.actual:g}"
                mark = "ok  " if slo.passed else "FAIL"
                why = "" if slo.passed else f": {slo.detail}"
                line = f"  {mark} {slo.name}: {actual} (target {slo.target:g} {slo.unit}){why}"
                print(line, file=sys.stderr)
            print(self.verdict.headline, file=sys.stderr)
            print(f"verdict: {'PASS' if passed else 'FAIL'} - reports in {self.run_dir}", file=sys.stderr)
            return EXIT_OK if passed else EXIT_SLO_BREACHED
        finally:
            print(outcome_table(self.stats), file=sys.stderr)

    def summary(self) -> str:
        s = self.stats
        lines = [
            f"run {self.run_dir.name}: {self.reason}",
            f"  offered {s.offered} messages in {s.fates.attempts} submission attempts, dropped {s.dropped}; "
            f"ESP replies other than acceptance {s.esp_refusals}",
        ]
        if self.held is not None:
            held = f"  the SUT still held {self.held} at the end of the drain: pending if not at the ESP"
            lines.append(held)
        failed = self._timeline.action_failures if self._timeline is not None else []
        lines += [f"  action failed: {f}" for f in failed]
        return "\n".join(lines)

    # -- plumbing -----------------------------------------------------------------------------------------

    def _write_info(self) -> None:
        self.info.write(self.run_dir)

    @contextlib.contextmanager
    def _progress(self) -> Iterator[Progress]:
        sc = self.scenario
        progress = Progress(sc.name, sc.duration, enabled=self.show_progress, drain_s=sc.drain_deadline)
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
