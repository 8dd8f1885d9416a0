"""The checks a run makes before it starts anything: every address allowed (mailstorm.netguard), the
target built and able to take the timeline's actions and their parameters, every ESP's profile limits
and TLS files, a restore that has a snapshot before it, Prometheus and the rules file when alerts are
asked for, and the campaigns' list files and triggers. A failure is a ``UserError`` naming the field
(made by the caller's ``error``, which points into the scenario file); nothing has been started."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mailstorm.errors import ConfigError, FieldError, HarnessError, TargetNotAllowed, UserError
from mailstorm.harness.alerts.stack import AlertStack
from mailstorm.harness.campaign.runner import Campaigns
from mailstorm.harness.chaos_spec import INVERSE_ACTIONS
from mailstorm.harness.esp_setup import esp_limits
from mailstorm.harness.scenario import Scenario
from mailstorm.harness.snapshots import check_snapshots
from mailstorm.harness.targets.base import TARGETS, Actionable, ParamChecked, Target
from mailstorm.ledger import SegmentPolicy
from mailstorm.netguard import check_address
from mailstorm.runinfo import EspLimits

ErrorAt = Callable[[tuple[str | int, ...], str], UserError]


@dataclass
class Checked:
    """What the checks built, for the run to use."""

    target: Target
    esp_limits: EspLimits | None
    esps_limits: dict[str, EspLimits | None] | None
    alerts: AlertStack | None


def preflight(sc: Scenario, *, allow_remote: bool, campaigns: Campaigns, error: ErrorAt) -> Checked:
    """Every check that needs no process: the target knows the timeline's actions, addresses allowed."""
    SegmentPolicy.from_env()  # the ledger settings every part inherits: a bad one stops the run here
    where = ["esp"] if sc.esps is None else [("esps", j) for j in range(len(sc.esps))]
    hosts = [((*_loc(w), "bind"), e.bind, f"{_dotted(w)}.bind") for w, e in zip(where, sc.fleet, strict=True)]
    first = sc.fleet[0]  # a fleet of hosts: the runner talks to each, and listens for their joins
    hosts += [(("esp", "hosts", i), h, "esp.hosts address") for i, h in enumerate(first.hosts)]
    if first.hosts:
        listen = first.join_listen.rpartition(":")[0].strip("[]")
        hosts.append((("esp", "join_listen"), listen, "esp.join_listen"))
    hosts += [
        (("probes", i, "url"), urlsplit(p.url).hostname or "", "probe URL")
        for i, p in enumerate(sc.probes)
        if p.url
    ]
    probe = sc.analytics.probe if sc.analytics is not None else None
    if probe is not None and probe.url != "target":
        hosts.append(
            (("analytics", "probe", "url"), urlsplit(probe.url).hostname or "", "analytics probe URL")
        )
    target = TARGETS[sc.target.kind](sc.target)
    if not isinstance(target, Target):
        raise HarnessError(
            f"target kind {sc.target.kind!r} does not implement the Target protocol "
            "(kind, addresses, start, stop)"
        )
    # Whatever its fields are called, a target names the hosts its spec sends traffic to.
    hosts += [(("target", *a.field), a.host, "target address") for a in target.addresses()]
    for loc, host, what in hosts:
        try:
            check_address(host, allow_remote=allow_remote, what=what)
        except TargetNotAllowed as exc:
            raise error(loc, str(exc)) from None
    limits: dict[str, EspLimits | None] = {}
    for w, esp in zip(where, sc.fleet, strict=True):
        try:
            limits[esp.label] = esp_limits(esp)
        except ConfigError as exc:
            raise error((*_loc(w), "profile"), str(exc)) from None
    for w, esp in zip(where, sc.fleet, strict=True):
        for field in ("tls_cert", "tls_key"):  # the ESP would refuse them at start: say so first
            path = getattr(esp, field)
            if path is not None and not Path(path).is_file():
                raise error((*_loc(w), field), f"{path}: no such file")
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
                    raise error(("chaos", i, "target"), msg)
            if isinstance(target, ParamChecked):
                try:
                    target.check_params(action.action, action.params)
                except UserError as exc:
                    raise error(("chaos", i, "target"), str(exc)) from None
        # A restore of a snapshot no earlier step takes could only fail mid-run: say so now.
        unsnapped = check_snapshots([(sc.chaos[i].at, i, a.action, a.params) for i, a in wanted])
        if unsnapped is not None:
            raise error(("chaos", unsnapped[0], "target"), unsnapped[1])
    alerts = None
    if sc.alerts is not None:  # Prometheus installed, the rules file accepted: before anything starts
        alerts = AlertStack(sc.alerts)
        alerts.check()
    try:  # a list file that is not a list, a trigger the target cannot take: before anything starts
        campaigns.check(target, sc.target.kind)
    except FieldError as exc:
        raise error(exc.loc, str(exc)) from None
    return Checked(
        target=target,
        esp_limits=limits[sc.fleet[0].label],  # the primary's: what the SUT sends through first
        esps_limits=limits if sc.esps is not None else None,  # every ESP's, for sizing failover
        alerts=alerts,
    )


def _loc(where: str | tuple[str, int]) -> tuple[str | int, ...]:
    return (where,) if isinstance(where, str) else where


def _dotted(where: str | tuple[str, int]) -> str:
    return where if isinstance(where, str) else f"{where[0]}[{where[1]}]"
