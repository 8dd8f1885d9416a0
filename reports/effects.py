"""Whether each fault window touched anything: the guard against a fault that never happened.

A chaos step can miss the traffic altogether (a fault on a phase or protocol the SUT never uses, a
toxic on a path nothing takes, an outage of a part of the ESP the SUT never calls), and a run would
then report that the pipeline survived something that never happened. Each window is judged from the
ledgers on three counts:

``acted``     records naming the window's fault: the fake ESP's esp.fault actions (a listener's outage
              begin/end is a change of state, not an action) and its esp.replied refusals and cuts, the
              chaos proxy's proxy.acted; from one second before the window to the end of its span.
``failed``    failures seen around the traffic during the window's *span* (from its start to the start
              of its recovery, at least one second past its end), beyond what the quiet seconds of the
              run (outside every span, after a 2 s warm-up) show at the same rate, with Poisson slack
              (``2 * sqrt(expected)``): submissions the SUT refused or failed, the SUT's deferrals and
              bounces, the ESP's refusals and cuts, connections the chaos proxy could not make upstream.
``impacted``  the recovery analysis found an unhealthy second (its ``time_to_impact_s`` is set).
``moved``     in a run with several ESPs, for a step on one of them: acceptances through the *other*
              ESPs during the window's span beyond what they took in the quiet seconds at the same rate
              (same slack): mail the SUT moved away from the faulted ESP. A SUT that fails over within
              one delivery (Postfix's smtp_fallback_relay) shows no failure at all, only this.

Who decides. Where the fault's own actor records every action it takes (an ``esp_fault``: the fake
ESP's engine; a ``network`` step: the chaos proxy), ``acted`` alone decides, and failures of someone
else's making in the same seconds do not count. Where no actor can see the fault act (an outage
refuses connections the ESP never sees, a crashed ESP records nothing, a target action is the SUT's own
affair, a window listed in run.json names no actor), any of the three counts. A window with none had
no effect: the reports name it, and ``max_recovery_s`` fails on it (mailstorm.reports.slo).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mailstorm.ledger import Kind
from mailstorm.reports.recovery import Recovery, Window
from mailstorm.reports.store import Store

_NS = 1_000_000_000
_WARMUP_S = 2
ACTOR = "actor"  # the fault's own records decide
CLIENT = "client"  # anything seen around the traffic decides


@dataclass(frozen=True)
class Effect:
    acted: int
    failed: int
    impacted: bool
    decided_by: str  # ACTOR | CLIENT
    moved: int = 0

    @property
    def none(self) -> bool:
        if self.decided_by == ACTOR:
            return self.acted == 0
        return self.acted == 0 and self.failed == 0 and not self.impacted and self.moved == 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def actor(w: Window) -> tuple[str | None, str]:
    """The name the window's fault acts under in the ledgers, and who decides its effect."""
    params = w.params or {}
    if w.what == "network":
        return str(params.get("name") or w.name), ACTOR
    if w.what == "esp_fault":
        # An outage installed as a plain fault refuses connections its ESP never sees, as esp_outage does.
        return str(params.get("name") or w.name), CLIENT if params.get("type") == "outage" else ACTOR
    if w.what == "esp_outage":
        return w.name, CLIENT
    if w.what == "target":
        return None, CLIENT
    return w.name, CLIENT  # a window from run.json: its name, if the ESP knew the fault by it


# A submission the SUT refused or that failed, not one the generator abandoned when it was stopped.
FAILED_SUBMISSION = f"k = '{Kind.LOAD_SUBMIT}' AND NOT coalesce(ok, false) AND phase IS DISTINCT FROM 'stop'"
# Every failure seen around the traffic: failed submissions, the SUT's deferrals and bounces, the ESP's
# refusals and cuts, the chaos proxy's failed upstreams.
_FAILURES = f"""SELECT t FROM rec WHERE ({FAILED_SUBMISSION}) OR k IN ('{Kind.SUT_DEFERRED}',
    '{Kind.SUT_BOUNCED}', '{Kind.ESP_REPLIED}', '{Kind.PROXY_UPSTREAM_FAILED}')"""


def failures_per_second(store: Store, t0_ns: int, n: int) -> np.ndarray:
    """Every failure the ledgers show around the traffic, per second from ``t0_ns`` (``n`` seconds)."""
    return store.per_second(_FAILURES, t0_ns, n)


def effects(windows: list[Window], recs: list[Recovery], store: Store, t0_ns: int, n: int) -> list[Effect]:
    """One ``Effect`` per window (``recs``: the recovery of each, in the same order)."""
    fails = failures_per_second(store, t0_ns, n)
    spans = [_span(r, n) for r in recs]
    quiet = np.ones(n, dtype=bool)
    quiet[:_WARMUP_S] = False
    for a, b in spans:
        quiet[max(a, 0) : max(b, 0)] = False
    elsewhere: dict[str, np.ndarray] = {}  # ESP -> acceptances through the others, per second
    out = []
    for w, r, (a, b) in zip(windows, recs, spans, strict=True):
        name, decided_by = actor(w)
        failed = _beyond(fails, quiet, a, b)
        moved = 0
        if w.esp is not None and w.esp in store.esps and len(store.esps) > 1:
            if w.esp not in elsewhere:
                elsewhere[w.esp] = _accepted_per_second(store, t0_ns, n, not_esp=w.esp)
            moved = _beyond(elsewhere[w.esp], quiet, a, b)
        acted = _acted(store.acts.get(name) if name else None, t0_ns // _NS + a - 1, t0_ns // _NS + b + 1)
        out.append(Effect(acted, failed, r.time_to_impact_s is not None, decided_by, moved))
    return out


def _beyond(per_second: np.ndarray, quiet: np.ndarray, a: int, b: int) -> int:
    """What ``per_second`` counts in seconds [a, b) beyond its quiet seconds' rate, with Poisson slack."""
    n = len(per_second)
    rate = float(per_second[quiet].mean()) if quiet.any() else 0.0
    observed = int(per_second[max(a, 0) : min(b, n)].sum())
    expected = rate * (b - a)
    return max(0, observed - int(np.ceil(expected + 2 * np.sqrt(expected))))


def _accepted_per_second(store: Store, t0_ns: int, n: int, *, not_esp: str) -> np.ndarray:
    """ESP acceptances (the load's, not a campaign's) per second through every ESP but ``not_esp``."""
    return store.per_second(
        f"""SELECT t FROM rec WHERE k = '{Kind.ESP_ACCEPTED}' AND campaign IS NULL AND esp_i >= 0
            AND esp_i != {store.esps.index(not_esp)}""",
        t0_ns,
        n,
    )


def _span(r: Recovery, n: int) -> tuple[int, int]:
    """Seconds [a, b) of a window and its recovery: from its start to the start of its recovery (the end
    of the data when it never recovered), at least one second past its end."""
    end = int(np.ceil(r.end_s)) + 1
    if not r.recovered:
        return int(np.floor(r.start_s)), max(n, end)
    return int(np.floor(r.start_s)), max(end, int(np.ceil(r.end_s + (r.time_to_recover_s or 0.0))))


def _acted(per_second: Counter[int] | None, first: int, last: int) -> int:
    if not per_second:
        return 0
    return sum(c for sec, c in per_second.items() if first <= sec <= last)
