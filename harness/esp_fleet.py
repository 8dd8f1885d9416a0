"""The run's fake ESPs: one process per ESP of the scenario (``esps:``; ``esp:`` is a fleet of one), each
with its own ports, seed, log and ledger files, started, crashed, restarted and stopped by name.

The first ESP is the SUT's primary relay and the only one the chaos proxy fronts; the others are its
fallbacks, in the file's order (``relays``). A fleet of one is exactly the single ESP of before: ledger
files ``esp-smtp-N``, log ``logs/esp.log``, seed ``derive(seed, "esp")``, CA ``<run>/esp/ca.pem``. With
several, each ESP writes ``esp-<name>-smtp-N`` and ``logs/esp-<name>.log`` and its CA to
``<run>/esp/<name>/ca.pem``, and the fleet writes their bundle to ``<run>/esp/ca.pem``, the one file the
SUT trusts for all of them.

An ``esp:`` with ``hosts`` is served by fake ESPs that join from those hosts (``remote``, an
``mailstorm.harness.esp_hosts.EspHosts``): the fleet starts none of its own, its control client fans every
change out to all of them, and the SUT's relays are their SMTP listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from mailstorm.errors import PartDied
from mailstorm.fake_esp.client import ControlClient
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.esp_hosts import EspHosts, FanOut
from mailstorm.harness.esp_setup import ca_path, esp_process
from mailstorm.harness.scenario import EspSection
from mailstorm.ports import free_port
from mailstorm.runinfo import EspInfo


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
        self._webhook_url: str | None = None
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
            # Only the first ESP's webhooks go through the chaos proxy (it fronts the first ESP alone).
            webhook_url=self._webhook_url if name == self.first else None,
            ca=ca_path(self._run_dir, name if self.several else None),
        )

    def start(self, *, webhook_url: str | None = None) -> None:
        """Start every ESP in order (each ready before the next starts); then the CA bundle, if TLS."""
        self._webhook_url = webhook_url
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

    def relays(self, first: tuple[str, int]) -> tuple[tuple[str, int], ...]:
        """The SUT's relays in order: ``first`` (the first ESP, or the proxy in front of it), then every
        other ESP's SMTP listener; a fleet of hosts: every host's."""
        if self.remote is not None:
            return self.remote.relays()
        return (first, *((p.smtp_host, p.smtp_port) for n, p in self.processes.items() if n != self.first))

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
