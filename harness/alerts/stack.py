"""Prometheus and Alertmanager for one run: checked before anything starts, started on free loopback
ports with throwaway data directories, ready when their ``/-/ready`` says so, always stopped.

``check()`` (no process of the run yet): the binaries are installed (Debian's ``prometheus`` and
``prometheus-alertmanager``), and the rules file passes ``promtool check rules`` (without promtool:
Prometheus started alone on the rules, which it refuses to start with). ``start(run_dir, scrape)``:
the receiver first (the Alertmanager posts to it), then Alertmanager, then Prometheus scraping
``scrape`` (``Scrape`` pages from ``scrape_targets``: the runner's, every fake ESP's control API, each
labelled ``esp="<name>"`` in a run with several, the SUT's own) every ``scrape_interval`` and evaluating
the rules every ``evaluation_interval``, ready once it also knows its Alertmanager. Their configs are
kept in ``<run>/alerts/`` for reading (their data directories too, while they run), their logs in
``logs/``. With ``start: false`` only the receiver runs. ``stop()`` ends them (SIGTERM, then SIGKILL)
and removes the data directories, whatever happened before.

Alertmanager is set to notify at once and one alert per group (``group_by: ['...']``, ``group_wait: 0s``,
``group_interval: 1s``) with resolutions (``send_resolved``), so a notification's arrival is the
alert's timing and not the Alertmanager's batching; its gossip (port 9094) is off.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from mailstorm.deathsig import die_with_parent
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.alerts.receiver import AlertReceiver
from mailstorm.harness.alerts.spec import AlertsSpec
from mailstorm.harness.targets.base import Monitored
from mailstorm.ports import free_port

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"  # Debian's name; upstream's binary is "alertmanager"
PROMTOOL = "promtool"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
POLL_S = 0.1  # readiness poll period


@dataclass(frozen=True)
class Scrape:
    """One metrics page Prometheus scrapes: its job, its URL, the bearer token it needs (a fake ESP's
    control API with ``--token``), and the labels its series get (``esp``: which ESP of several)."""

    job: str
    url: str
    token: str | None = None
    labels: tuple[tuple[str, str], ...] = ()


def find(name: str, *alternatives: str) -> str | None:
    for candidate in (name, *alternatives):
        if path := shutil.which(candidate):
            return path
    return None


class AlertStack:
    def __init__(self, spec: AlertsSpec) -> None:
        self.spec = spec
        self.logs_dir = Path(".")
        self.receiver: AlertReceiver | None = None
        self.prometheus_url: str | None = None
        self.alertmanager_url: str | None = None
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._data: list[tempfile.TemporaryDirectory] = []

    # -- before anything starts --------------------------------------------------------------------------

    def check(self) -> None:
        """UserError (one line) when the stack cannot start: a binary missing, a rules file refused."""
        if not self.spec.start:
            return
        for name, alt in ((PROMETHEUS, ()), (ALERTMANAGER, ("alertmanager",))):
            if find(name, *alt) is None:
                raise UserError(
                    f"alerts: {name} is not installed (Debian: apt-get install prometheus "
                    "prometheus-alertmanager; or set alerts.start: false and point your own Alertmanager "
                    "at mailstorm's receiver)"
                )
        rules = self.spec.rules
        assert rules is not None  # the spec requires it when starting
        if not rules.is_file():
            raise UserError(f"alerts.rules: {rules}: no such file")
        if (promtool := find(PROMTOOL)) is not None:
            proc = subprocess.run(
                [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
            )
            if proc.returncode != 0:
                raise UserError(
                    f"alerts.rules: Prometheus refuses {rules}: {_gist(proc.stdout + proc.stderr)}"
                )
        else:
            self._trial_start(rules)

    def _trial_start(self, rules: Path) -> None:
        """Without promtool: Prometheus itself, started alone on the rules (it refuses to start on a bad
        file), stopped as soon as it is ready."""
        with tempfile.TemporaryDirectory(prefix="mailstorm-promcheck-") as tmp:
            config = Path(tmp) / "prometheus.yml"
            config.write_text(yaml.safe_dump({"rule_files": [str(rules.resolve())]}))
            self.logs_dir, port = Path(tmp), free_port()
            argv = [find(PROMETHEUS), f"--config.file={config}", f"--storage.tsdb.path={tmp}/data"]
            self._launch("prometheus", [*argv, f"--web.listen-address={HOST}:{port}"])
            try:
                refused = f"alerts.rules: Prometheus refuses {rules}"
                self._await_ready("prometheus", f"http://{HOST}:{port}", refused=refused)
            finally:
                self._end_processes()

    # -- the run -------------------------------------------------------------------------------------------

    def start(self, run_dir: Path, scrape: list[Scrape]) -> dict[str, str]:
        """Start the receiver (and, unless ``start: false``, Alertmanager and Prometheus); their URLs."""
        self.logs_dir = run_dir / "logs"
        try:
            self.receiver = AlertReceiver(run_dir / "ledger", self.spec.receiver_port or 0).start()
        except OSError as exc:
            raise UserError(f"alerts.receiver_port: cannot listen: {exc.strerror or exc}") from None
        if not self.spec.start:
            print(
                f"mailstorm: alert receiver at {self.receiver.url} (your Alertmanager's webhook)",
                file=sys.stderr,
            )
            return self.urls
        folder = run_dir / "alerts"
        folder.mkdir(exist_ok=True)
        am_port, prom_port = free_port(), free_port()
        am_config = folder / "alertmanager.yml"
        am_config.write_text(yaml.safe_dump(self._alertmanager_config(), sort_keys=False))
        self._launch(
            "alertmanager",
            [
                find(ALERTMANAGER, "alertmanager"),
                f"--config.file={am_config}",
                f"--storage.path={self._data_dir(folder, 'alertmanager')}",
                f"--web.listen-address={HOST}:{am_port}",
                "--cluster.listen-address=",  # no gossip: one instance, no port 9094
            ],
        )
        self.alertmanager_url = f"http://{HOST}:{am_port}"
        self._await_ready("alertmanager", self.alertmanager_url)
        prom_config = folder / "prometheus.yml"
        prom_config.write_text(yaml.safe_dump(self._prometheus_config(scrape, am_port), sort_keys=False))
        self._launch(
            "prometheus",
            [
                find(PROMETHEUS),
                f"--config.file={prom_config}",
                f"--storage.tsdb.path={self._data_dir(folder, 'prometheus')}",
                f"--web.listen-address={HOST}:{prom_port}",
                # Firing alerts are sent again every resend delay (1 min by default): one evaluated before
                # Prometheus knew its Alertmanager (a rule firing at start) would reach it a minute late.
                f"--rules.alert.resend-delay={round(self.spec.evaluation_interval * 1000)}ms",
            ],
        )
        self.prometheus_url = f"http://{HOST}:{prom_port}"
        self._await_ready("prometheus", self.prometheus_url)
        # Ready is not yet able to alert: Prometheus learns its Alertmanager a few seconds after it starts
        # (discovery updates are batched), and alerts before that are dropped until resent.
        self._await_ready("prometheus", self.prometheus_url, check=_knows_alertmanager)
        return self.urls

    def _alertmanager_config(self) -> dict:
        return {
            "route": {
                "receiver": "mailstorm",
                "group_by": ["..."],
                "group_wait": "0s",
                "group_interval": "1s",
                "repeat_interval": "24h",
            },
            "receivers": [
                {"name": "mailstorm", "webhook_configs": [{"url": self.receiver.url, "send_resolved": True}]}
            ],
        }

    def _prometheus_config(self, scrape: list[Scrape], am_port: int) -> dict:
        interval = f"{round(self.spec.scrape_interval * 1000)}ms"
        # One scrape config per job, scheme, path and token (Prometheus sets those per config, not per
        # target): ``job``, then ``job-2``...; in each, one static config per set of labels.
        configs: dict[str, dict[tuple[str, str, str], dict[tuple, list[str]]]] = defaultdict(dict)
        for page in scrape:
            parts = urlsplit(page.url)
            key = (parts.scheme or "http", parts.path or "/metrics", page.token or "")
            configs[page.job].setdefault(key, defaultdict(list))[page.labels].append(parts.netloc)
        jobs = []
        for job, by_key in configs.items():
            for n, ((scheme, path, token), by_labels) in enumerate(sorted(by_key.items())):
                statics = [
                    {"targets": hosts, **({"labels": dict(labels)} if labels else {})}
                    for labels, hosts in by_labels.items()
                ]
                entry = {
                    "job_name": job if n == 0 else f"{job}-{n + 1}",
                    "scheme": scheme,
                    "metrics_path": path,
                    "static_configs": statics,
                }
                if scheme == "https":
                    entry["tls_config"] = {"insecure_skip_verify": True}  # the run's own CA, loopback only
                if token:
                    entry["authorization"] = {"credentials": token}
                jobs.append(entry)
        return {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": f"{round(self.spec.evaluation_interval * 1000)}ms",
            },
            "rule_files": [str(Path(self.spec.rules).resolve())],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{am_port}"]}]}]},
            "scrape_configs": jobs,
        }

    def _data_dir(self, folder: Path, name: str) -> str:
        # In the run directory, not /tmp: a runner killed with -9 (nothing of it left to clean up) leaves
        # them with its run, where `mailstorm cleanup` and a person look.
        tmp = tempfile.TemporaryDirectory(prefix=f"{name}-data-", dir=folder)
        self._data.append(tmp)
        return tmp.name

    def _launch(self, name: str, argv: list[str]) -> None:
        with (self.logs_dir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner, which stops it
                **die_with_parent(),
            )
        self._procs.append((name, proc))

    def _await_ready(
        self, name: str, base: str, *, refused: str | None = None, check: Callable[[str], bool] | None = None
    ) -> None:
        proc = dict(self._procs)[name]
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log = (self.logs_dir / f"{name}.log").read_text(errors="replace")
                raise UserError(f"{refused or f'alerts: {name} did not start'}: {_gist(log)}")
            if (check or _answers_ready)(base):
                return
            time.sleep(POLL_S)  # the poll period; readiness is the answer of the service itself
        raise HarnessError(f"alerts: {name} not ready within {READY_TIMEOUT_S:g}s (see logs/{name}.log)")

    def await_resolved(self, out=sys.stderr) -> list[str]:
        """Wait, up to ``resolve_wait``, until no alert the run waits for is firing (those named in
        ``map``, when it is given, else all): the alerts still firing at the end (a false alert that
        never resolves, one whose fault's effects outlast the run). Polls the receiver's own state."""
        if self.receiver is None or self.spec.resolve_wait <= 0:
            return []
        named = set(self.spec.map)

        def waited() -> list[str]:
            assert self.receiver is not None
            return [n for n in self.receiver.firing() if not named or n in named]

        if not (left := waited()):
            return []
        out.write(
            f"mailstorm: waiting up to {self.spec.resolve_wait:g}s for {len(left)} firing alert(s) to "
            f"resolve ({', '.join(sorted(set(left)))})\n"
        )
        deadline = time.monotonic() + self.spec.resolve_wait
        while (left := waited()) and time.monotonic() < deadline:
            time.sleep(POLL_S)  # the receiver's state is the condition; this is its poll period
        return left

    def stop(self, *, wait_resolved: bool = False) -> None:
        """Prometheus first (it stops sending), then Alertmanager, then the receiver; data removed. With
        ``wait_resolved`` (a run ending normally), first ``await_resolved``."""
        if wait_resolved:
            self.await_resolved()
        try:
            self._end_processes()
            if self.receiver is not None:
                self.receiver.stop()
                self.receiver = None
        finally:
            for tmp in self._data:
                tmp.cleanup()
            self._data.clear()

    def _end_processes(self) -> None:
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5.0)
        self._procs.clear()

    @property
    def urls(self) -> dict[str, str]:
        """For run.json: the receiver's URL, and Prometheus' and Alertmanager's when started."""
        out = {"receiver": self.receiver.url} if self.receiver is not None else {}
        if self.prometheus_url:
            out["prometheus"] = self.prometheus_url
        if self.alertmanager_url:
            out["alertmanager"] = self.alertmanager_url
        return out


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as resp:
            return resp.read() if resp.status == 200 else None
    except (urllib.error.URLError, OSError):
        return None


def _answers_ready(base: str) -> bool:
    return _get(f"{base}/-/ready") is not None


def _knows_alertmanager(base: str) -> bool:
    body = _get(f"{base}/api/v1/alertmanagers")
    try:
        return bool(body and json.loads(body)["data"]["activeAlertmanagers"])
    except (ValueError, KeyError, TypeError):
        return False


def scrape_targets(
    runner: str | None, esps: Iterable[tuple[str | None, str, str | None]], target: object
) -> list[Scrape]:
    """What Prometheus scrapes: job ``mailstorm`` (the runner's live /metrics), job ``esp`` (every fake
    ESP's control API /metrics; ``esps`` is (name, control URL, token) each, a name labelling its series
    ``esp="<name>"``, None for the one ESP of a run) and ``sut`` (the target's own metrics pages)."""
    pages = [Scrape("mailstorm", runner)] if runner else []
    pages += [
        Scrape("esp", f"{control}/metrics", token, (("esp", name),) if name else ())
        for name, control, token in esps
    ]
    pages += [Scrape("sut", url) for url in (target.metrics_urls if isinstance(target, Monitored) else ())]
    return pages


def _gist(output: str) -> str:
    """A tool's failure as one line: its error lines, without the banner and the log framing."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith("Checking ") and ln not in {"FAILED:", "SUCCESS"}]
    # A log (logfmt): its error lines; a tool's report: all of it.
    errors = [ln for ln in useful if "level=error" in ln or "level=fatal" in ln] or useful[:3]
    return "; ".join(errors[-3:])[:500] or "no output"
