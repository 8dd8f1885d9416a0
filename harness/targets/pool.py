"""The ``pool`` target: N instances of another target kind behind a real HAProxy (mailstorm.harness.haproxy),
as a relay pool behind a load balancer is run.

Each member is a target of the kind ``member`` describes (``{kind: reference}``, a ``process`` command,
``postfix``...), started with a run directory of its own (``<run>/pool/member-N``) and a ledger source
of its own (``sut-mN``: its ``sut.*`` records say which member took a message; a ``process`` command
writes under ``{ledger_source}``). HAProxy listens on a free loopback port in TCP mode and spreads the
connections over the members, health-checking them; the load goes to HAProxy only. The pool writes
``pool.member`` (each member: its kind, ledger source, address) and ``pool.server`` (HAProxy's view of a
member, polled from its stats socket every ``stats_interval_s``, at every change) records under the
ledger source ``pool``; mailstorm.reports.pool turns them into per-member figures and ejection times.

Actions. ``params: {member: N}`` sends an action to member N (any action its kind knows, with the rest of
the params); ``member: balancer`` acts on HAProxy (``kill``, ``stop``, ``start``, ``restart``,
``pause``/``sigstop``, ``resume``/``sigcont``); without ``member`` the action goes to every member.
``disable``/``enable`` (with a member) put it in and out of HAProxy's maintenance (drained: no new
connection). ``start`` waits until HAProxy sees every member up again before the pool counts as
started; a member restarted by the timeline keeps its port (every member kind does), so HAProxy's health
checks bring it back by themselves.
"""

from __future__ import annotations

import atexit
import signal
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.haproxy import Balancer, BalancerConfig, ServerStat
from mailstorm.harness.targets.base import (
    TARGETS,
    Actionable,
    Address,
    Endpoint,
    HeldQueue,
    QueueLister,
    QueueSampler,
    TargetContext,
    register,
)
from mailstorm.ledger import LedgerWriter, PoolMember, PoolServer
from mailstorm.ports import free_port

HOST = "127.0.0.1"
BALANCER = "balancer"
_SIGNALS = {
    "kill": signal.SIGKILL,
    "pause": signal.SIGSTOP,
    "sigstop": signal.SIGSTOP,
    "resume": signal.SIGCONT,
    "sigcont": signal.SIGCONT,
}
BALANCER_SIGNALS = frozenset({"stop", "start", "restart", *_SIGNALS})
HAPROXY_ACTIONS = frozenset({"disable", "enable"})
SOURCE = "pool"


class PoolSpec(BaseModel):
    """N members of another target kind behind HAProxy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["pool"] = "pool"
    members: int = Field(2, ge=1, le=16, description="how many instances of the member target")
    member: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "reference"},
        description="the member's target spec (any kind but pool); each member is one of these",
    )
    port: int = Field(0, ge=0, le=65535, description="HAProxy's listening port; 0 = a free one")
    balance: Literal["roundrobin", "leastconn", "first"] = "roundrobin"
    check: Literal["smtp", "tcp"] = Field("smtp", description="health check: an SMTP HELO, or a TCP connect")
    check_interval_ms: int = Field(200, ge=10, le=60_000, description="HAProxy's 'inter'")
    fall: int = Field(2, ge=1, le=100, description="failed checks before a member is taken out")
    rise: int = Field(2, ge=1, le=100, description="good checks before it is put back")
    retries: int = Field(3, ge=0, le=100, description="connect retries to a member that refuses")
    redispatch: bool = Field(False, description="retry a refused connection on another member")
    stats_interval_s: float = Field(0.05, gt=0, le=10, description="how often HAProxy's stats are polled")
    ready_timeout_s: float = Field(30.0, gt=0, description="for HAProxy to see every member up")
    haproxy: str = Field("haproxy", min_length=1, description="the HAProxy binary")

    @field_validator("member")
    @classmethod
    def _member_spec(cls, value: dict[str, Any]) -> dict[str, Any]:
        member_spec(value)
        return value

    @property
    def member_spec(self) -> BaseModel:
        return member_spec(self.member)


def member_spec(value: dict[str, Any]) -> BaseModel:
    """The member's spec, parsed by its own kind's model; ValueError naming what is wrong."""
    kind = value.get("kind", "reference")
    if kind == "pool":
        raise ValueError("a pool's member cannot be a pool")
    if kind not in TARGETS.names():
        raise ValueError(
            f"unknown member kind {kind!r}; known: {', '.join(k for k in TARGETS.names() if k != 'pool')}"
        )
    try:
        return TARGETS[kind].spec_model.model_validate({**value, "kind": kind})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(member)"
        raise ValueError(f"member.{where}: {err['msg']}") from None


@register
class PoolTarget:
    """Starts the members and HAProxy in front of them; acts on either; polls HAProxy's view."""

    spec_model = PoolSpec

    def __init__(self, spec: PoolSpec) -> None:
        self.spec = spec
        sub = spec.member_spec
        self._members: list[Any] = [TARGETS[sub.kind](sub) for _ in range(spec.members)]
        self._balancer: Balancer | None = None
        self._writer: LedgerWriter | None = None
        self._poller: threading.Thread | None = None
        self._polling = threading.Event()
        self._status: dict[int, str] = {}
        self._atexit = False

    @property
    def member_kind(self) -> str:
        return self.spec.member_spec.kind

    # -- Target ---------------------------------------------------------------------------------------
    def addresses(self) -> list[Address]:
        """HAProxy's loopback listener, and every address a member's spec names (under ``member``)."""
        own = [Address(HOST)]
        first = self._members[0].addresses()
        return own + [Address(a.host, ("member", *a.field)) for a in first]

    def start(self, ctx: TargetContext) -> list[Endpoint]:
        if not self._atexit:
            atexit.register(self.stop)
            self._atexit = True
        root = Path(ctx.run_dir) / "pool"
        self._writer = LedgerWriter(ctx.ledger_dir, SOURCE)
        servers = []
        for n, member in enumerate(self._members):
            sub = TargetContext(
                run_dir=root / f"member-{n}",
                ledger_dir=ctx.ledger_dir,
                seed=ctx.seed + 1000 * n,
                esp_smtp=ctx.esp_smtp,
                esp_http=ctx.esp_http,
                allow_remote=ctx.allow_remote,
                env=ctx.env,
                esp_security=ctx.esp_security,
                ledger_source=f"sut-m{n}",
            )
            Path(sub.run_dir).mkdir(parents=True, exist_ok=True)
            endpoints = member.start(sub)
            smtp = [e for e in endpoints if e.kind == "smtp"]
            if len(smtp) != 1:
                raise UserError(
                    f"target pool: a member must serve one SMTP endpoint; member {n} serves {len(smtp)}"
                )
            servers.append((smtp[0].host, smtp[0].port))
            address = f"{smtp[0].host}:{smtp[0].port}"
            self._writer.write(
                PoolMember(member=n, target=self.member_kind, source=sub.ledger_source, address=address)
            )
        spec = self.spec
        config = BalancerConfig(
            listen=(HOST, spec.port or free_port(HOST)),
            servers=tuple(servers),
            check=spec.check,
            inter_ms=spec.check_interval_ms,
            fall=spec.fall,
            rise=spec.rise,
            retries=spec.retries,
            redispatch=spec.redispatch,
            balance=spec.balance,
        )
        logs = Path(ctx.run_dir) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self._balancer = Balancer(config, root, logs / "haproxy.log", binary=spec.haproxy)
        self._balancer.start(spec.ready_timeout_s)
        self._wait_all_up()
        self._start_poller()
        return [Endpoint("smtp", *config.listen)]

    def stop(self) -> None:
        """Stop polling, HAProxy, then every member; idempotent."""
        self._polling.set()
        if self._poller is not None:
            self._poller.join(10)
            self._poller = None
        if self._balancer is not None:
            self._balancer.close()
        for member in self._members:
            member.stop()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- HAProxy's view -------------------------------------------------------------------------------
    def _wait_all_up(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout_s
        while True:
            stats = self._balancer.stats()
            if stats and len(stats) == len(self._members) and all(s.status == "UP" for s in stats):
                return
            if time.monotonic() > deadline:
                seen = ", ".join(f"m{s.member} {s.status} ({s.check})" for s in stats or [])
                raise HarnessError(
                    f"target pool: HAProxy does not see every member up: {seen or 'no answer'}"
                )
            time.sleep(0.05)  # polling interval of HAProxy's own checks (every check_interval_ms)

    def _start_poller(self) -> None:
        self._polling.clear()
        self._status = {}

        def poll() -> None:
            while not self._polling.is_set():
                self._record(self._balancer.stats() or [])
                self._polling.wait(self.spec.stats_interval_s)

        self._poller = threading.Thread(target=poll, name="pool-stats", daemon=True)
        self._poller.start()

    def _record(self, stats: list[ServerStat]) -> None:
        for s in stats:
            if self._status.get(s.member) != s.status:
                self._status[s.member] = s.status
                self._writer.write(
                    PoolServer(member=s.member, status=s.status, check=s.check, sessions=s.sessions)
                )

    # -- Alive / QueueSampler / QueueLister / Monitored -----------------------------------------------
    def alive(self) -> bool:
        """True while HAProxy and every member run (a member that cannot say counts as running)."""
        up = self._balancer is not None and self._balancer.alive()
        return up and all(m.alive() for m in self._members if hasattr(m, "alive"))

    def queue_depth(self) -> int | None:
        depths = [m.queue_depth() for m in self._members if isinstance(m, QueueSampler)]
        known = [d for d in depths if d is not None]
        return sum(known) if known else None

    def held_ids(self) -> HeldQueue | None:
        """Every member's listing; complete when every member could list its whole queue."""
        held: dict[str, str | None] = {}
        complete = True
        for n, m in enumerate(self._members):
            if not isinstance(m, QueueLister):
                complete = False  # what it holds is unknown
                continue
            listed = m.held_ids()
            if listed is None:
                return None
            held.update((corr, f"m{n}:{qid}") for corr, qid in listed.ids.items())
            complete = complete and listed.complete
        return HeldQueue(held, complete=complete)

    @property
    def health_urls(self) -> list[str]:
        return [u for m in self._members for u in getattr(m, "health_urls", [])]

    @property
    def metrics_urls(self) -> list[str]:
        return [u for m in self._members for u in getattr(m, "metrics_urls", [])]

    # -- Actionable -----------------------------------------------------------------------------------
    def actions(self) -> frozenset[str]:
        first = self._members[0]
        own = first.actions() if isinstance(first, Actionable) else frozenset()
        return own | BALANCER_SIGNALS | HAPROXY_ACTIONS

    def check_params(self, action: str, params: dict[str, Any]) -> None:
        """UserError for a ``member`` that names no member (checked before the run starts)."""
        self._which(action, params)

    def act(self, action: str, **params: Any) -> str:
        if action not in self.actions():
            raise UserError(
                f"pool target: unknown action {action!r}; known: {', '.join(sorted(self.actions()))}"
            )
        which, rest = self._which(action, params)
        if which == BALANCER:
            return self._act_balancer(action)
        if action in HAPROXY_ACTIONS:
            return self._balancer.set_server(which, action)
        chosen = range(len(self._members)) if which is None else [which]
        return "; ".join(f"member {n}: {self._members[n].act(action, **rest)}" for n in chosen)

    def _which(self, action: str, params: dict[str, Any]) -> tuple[int | str | None, dict[str, Any]]:
        rest = {k: v for k, v in params.items() if k != "member"}
        which = params.get("member")
        last = len(self._members) - 1
        if which == BALANCER:
            if action not in BALANCER_SIGNALS or rest:
                raise UserError(
                    f"pool target: the balancer knows {', '.join(sorted(BALANCER_SIGNALS))}, no params"
                )
            return BALANCER, rest
        if which is not None and (
            isinstance(which, bool) or not isinstance(which, int) or not 0 <= which <= last
        ):
            raise UserError(f"pool target: member must be 0..{last} or 'balancer', got {which!r}")
        if action in HAPROXY_ACTIONS and which is None:
            raise UserError(f"pool target: {action} needs params: {{member: N}}")
        first = self._members[0]
        if action not in HAPROXY_ACTIONS and not (
            isinstance(first, Actionable) and action in first.actions()
        ):
            raise UserError(f"pool target: a {self.member_kind} member has no action {action!r}")
        return which, rest

    def _act_balancer(self, action: str) -> str:
        b = self._balancer
        sig = _SIGNALS.get(action)
        if sig is not None:
            pid = b.signal(sig, action)
            if sig == signal.SIGKILL:
                b.proc.wait(10)
            return f"HAProxy: {sig.name} to pid {pid}"
        if action == "stop":
            b.terminate(graceful=True)
            return "HAProxy: stopped"
        if action == "start" and b.alive():
            return f"HAProxy: already running (pid {b.proc.pid})"
        b.terminate(graceful=True)
        pid = b.start(self.spec.ready_timeout_s)
        return f"HAProxy: {'started' if action == 'start' else 'restarted'} (pid {pid})"
