"""The run's fake ESPs: one process per ESP of the scenario (``esps:``; ``esp:`` is a fleet of one), each
with its own ports, seed, log and ledger files, started, crashed, restarted and stopped by name.

The first ESP is the SUT's primary relay; the others are its fallbacks, in the file's order
(``relays``). The chaos proxy fronts every ESP's paths (``proxy_paths``: SMTP, HTTP APIs, webhooks; with
several ESPs named ``<path>@<esp>``), and then the SUT relays to each ESP through its front. A fleet of
one is exactly the single ESP of before: ledger files ``esp-smtp-N``, log ``logs/esp.log``, seed
``derive(seed, "esp")``, CA ``<run>/esp/ca.pem``, proxy paths ``smtp``, ``http``, ``webhooks``. With
several, each ESP writes ``esp-<name>-smtp-N`` and ``logs/esp-<name>.log`` and its CA to
``<run>/esp/<name>/ca.pem``, and the fleet writes their bundle to ``<run>/esp/ca.pem``, the one file the
SUT trusts for all of them.

An ``esp:`` with ``hosts`` is served by fake ESPs that join from those hosts (``remote``, an
``mailstorm.harness.esp_hosts.EspHosts``): the fleet starts none of its own, its control client fans every
change out to all of them, and the SUT's relays are their SMTP listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mailstorm.errors import PartDied
from mailstorm.fake_esp.client import ControlClient
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.chaosproxy.base import path_key
from mailstorm.harness.esp_hosts import EspHosts, FanOut
from mailstorm.harness.esp_setup import ca_path, esp_process, proxy_paths
from mailstorm.harness.scenario import EspSection
from mailstorm.ports import free_port
from mailstorm.runinfo import EspInfo

if TYPE_CHECKING:
    from mailstorm.harness.chaosproxy.proxy import ChaosProxy


class EspFleet:
    """The fake ESP processes of one run, by their timeline names (``EspSection.label``)."""

    def __init__(
        self,
        specs: tuple[EspSection, ...],
        *,
        seed: Callable[[str], int],
        run_dir: Path,
        ledger_dir: Path,
        logs_dir: Path,
        allow_remote: bool = False,
    ) -> None:
        self.specs = {spec.label: spec for spec in specs}
        self.names = tuple(self.specs)
        self.several = len(specs) > 1
        self._seed = seed
        self._run_dir, self._ledger_dir, self._logs_dir = run_dir, ledger_dir, logs_dir
        # Ports chosen before anything starts: the chaos proxy must know the first ESP's.
        self.ports: dict[str, tuple[int, int | None, int | None]] = {
            name: (
                spec.smtp_port or free_port(),
                None if spec.http_port is None else (spec.http_port or free_port()),
                spec.control_port,
            )
            for name, spec in self.specs.items()
        }
        self.processes: dict[str, EspProcess] = {}
        self._webhook_urls: dict[str, str] = {}
        first = specs[0]
        self.remote = (
            EspHosts(
                first, seed=seed("esp"), run_id=run_dir.name, ledger_dir=ledger_dir, allow_remote=allow_remote
            )
            if first.hosts
            else None
        )

    @property
    def first(self) -> str:
        return self.names[0]

    def path(self, kind: str, name: str | None = None) -> str:
        """The chaos proxy's name of ESP ``name``'s path ``kind`` (None: the first ESP's); a fleet of one
        keeps the plain names (``smtp``, ``http``, ``webhooks``)."""
        return path_key(kind, (name or self.first) if self.several else None)

    def proxy_paths(self) -> dict[str, tuple[str, int]]:
        """What the chaos proxy fronts: every path of every ESP (mailstorm.harness.esp_setup.proxy_paths)."""
        paths: dict[str, tuple[str, int]] = {}
        for name, spec in self.specs.items():
            smtp_port, http_port, _ = self.ports[name]
            for kind, upstream in proxy_paths(spec, smtp_port, http_port).items():
                paths[self.path(kind, name)] = upstream
        return paths

    def log_path(self, name: str) -> Path:
        return self._logs_dir / (f"esp-{name}.log" if self.several else "esp.log")

    def _new(self, name: str, ports: tuple[int | None, int | None, int | None]) -> EspProcess:
        spec = self.specs[name]
        return esp_process(
            spec,
            seed=self._seed("esp" if name == self.first else f"esp-{name}"),
            run_dir=self._run_dir,
            ledger_dir=self._ledger_dir,
            log_path=self.log_path(name),
            ports=ports,
            # Its webhooks through the chaos proxy's front for them, when there is one.
            webhook_url=self._webhook_urls.get(name),
            ca=ca_path(self._run_dir, name if self.several else None),
        )

    def start(self, *, webhook_urls: Mapping[str, str] | None = None) -> None:
        """Start every ESP in order (each ready before the next starts); then the CA bundle, if TLS.
        ``webhook_urls``: by ESP name, where it posts its webhooks instead of its spec's URL (the
        proxy's front). A fleet of hosts: wait until every host has joined."""
        self._webhook_urls = dict(webhook_urls or {})
        if self.remote is not None:
            self.remote.wait_ready()  # serve() was called by the runner, which wrote the URL to run.json
            return
        for name in self.names:
            proc = self._new(name, self.ports[name])
            self.processes[name] = proc
            proc.start()
        if self.several and self.specs[self.first].tls_on:
            cas = [ca_path(self._run_dir, name).read_bytes() for name in self.names]
            ca_path(self._run_dir).write_bytes(b"".join(cas))

    def control(self, name: str | None = None) -> ControlClient | FanOut:
        """The control client of the ESP named ``name`` (None: the first; a fleet of hosts: all of them)."""
        if self.remote is not None:
            return self.remote.control()
        return self.processes[name or self.first].control

    def crash(self, name: str | None = None) -> str:
        """SIGKILL one fake ESP (all its workers): an ESP crash, for an esp_outage in crash mode."""
        proc = self.processes[name or self.first]
        pid = proc.pid
        proc.kill()
        return (
            f"fake ESP {name or self.first} pid {pid} killed"
            if self.several
            else f"fake ESP pid {pid} killed"
        )

    def restart(self, name: str | None = None) -> str:
        """A new fake ESP on the same ports and ledger, as a crashed ESP comes back (its start-up faults
        too; faults added at run time died with it)."""
        name = name or self.first
        old = self.processes[name]
        proc = self._new(name, (old.smtp_port, old.http_port, old.control_port))
        self.processes[name] = proc
        proc.start()
        return f"fake ESP{f' {name}' if self.several else ''} restarted (pid {proc.pid})"

    def check(self, down: Iterable[str | None] = ()) -> None:
        """``PartDied`` for an ESP that died, unless the timeline took it down (``down``; None: the
        first)."""
        if self.remote is not None:
            self.remote.check()
        down = {name or self.first for name in down}
        for name, proc in self.processes.items():
            if name not in down and not proc.alive():
                raise PartDied(
                    f"fake ESP{f' {name}' if self.several else ''} died (see {self.log_path(name)})"
                )

    def stop(self) -> None:
        """Stop every ESP; one failing to stop does not leave the others running."""
        errors: list[str] = []
        if self.remote is not None:
            try:
                self.remote.stop()
            except Exception as exc:
                errors.append(str(exc))
        for name, proc in self.processes.items():
            try:
                proc.stop()
            except Exception as exc:
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        if errors:
            raise RuntimeError("; ".join(errors))

    def relays(self, proxy: ChaosProxy | None = None) -> tuple[tuple[str, int], ...]:
        """The SUT's relays in order: every ESP's SMTP listener, or the ``proxy``'s front for it; a fleet
        of hosts: every host's."""
        if self.remote is not None:
            return self.remote.relays()
        return tuple(
            proxy.address(self.path("smtp", name)) if proxy is not None else (p.smtp_host, p.smtp_port)
            for name, p in self.processes.items()
        )

    def scrapes(self) -> list[tuple[str | None, str, str | None]]:
        """Every ESP's metrics source for Prometheus (mailstorm.harness.alerts.stack.scrape_targets):
        (its name, None in a fleet of one; its control API's URL; the token that API wants)."""
        return [
            (name if self.several else None, proc.control.base_url, self.specs[name].token)
            for name, proc in self.processes.items()
        ]

    def info(self, name: str) -> EspInfo:
        if self.remote is not None:
            return self.remote.info()[0]
        proc = self.processes[name]
        return EspInfo(
            name=name if self.several else None,
            smtp=f"{proc.smtp_host}:{proc.smtp_port}",
            http=proc.http_url,
            control=proc.control_url,
            pid=proc.pid,
            tls=self.specs[name].tls,
        )
