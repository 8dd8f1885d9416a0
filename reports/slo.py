"""The SLO verdict: each objective of ``SloSpec`` that is set, judged against the run's figures.

Every judged SLO becomes one ``SloResult`` (one JUnit test case). ``max_lost`` is always judged, and so
is ``max_dropped`` (arrivals the generator planned and could not send, against a count or a share of
the planned arrivals: a load that did not happen is not a load the pipeline survived). The
latency objectives are judged on the end-to-end percentiles of delivered messages (a lost message has
no latency; it is judged by ``max_lost``). ``max_recovery_s`` is judged on the slowest fault window; a
window that never recovered fails it, and so does a window whose fault had no effect (nothing was
refused, delayed, cut or failed in it: mailstorm.reports.effects), since it tested no recovery; a run
with no fault window passes it and says so.
``min_throughput`` is judged on the messages first delivered during the load phase, per second of it.
A run that submitted no message at all fails (an extra ``submitted`` result): it tested nothing. A run
whose correlation broke fails too (an extra ``correlation`` result): messages counted ``uncorrelated``
may have been delivered or lost, and nobody can say which (``correlation_failure``). A run an SLO
marked ``abort: true`` stopped early (a ``run.aborted`` record) fails first of all (an extra ``abort``
result naming the SLO, the figure and when): the load it was meant to carry never ran.
A run with a
campaign is not "nothing submitted"; each campaign is judged on its own (``judge_campaign``): it started,
``max_campaign_missing``, ``max_campaign_duplicated`` and ``max_suppressed_sent`` always (default 0),
``max_campaign_duration_s`` when set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mailstorm.ledger import CORRELATION_HEADER, RunAborted
from mailstorm.reports.spec import SloSpec

SLO_UNITS = {
    "max_lost": "messages",
    "max_dropped": "messages",
    "max_duplicated": "messages",
    "max_bounced": "messages",
    "max_pending": "messages",
    "p95_e2e_ms": "ms",
    "p99_e2e_ms": "ms",
    "max_recovery_s": "s",
    "min_throughput": "msg/s",
}


@dataclass(frozen=True)
class SloResult:
    name: str
    target: float
    actual: float | None
    passed: bool
    unit: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(
    slo: SloSpec,
    *,
    counts: dict[str, int],
    e2e: dict[str, Any],
    recover_s: list[float | None],
    throughput: float | None,
    planned: int = 0,
    dropped: int = 0,
    esp_unmatched: int = 0,
    correlation: str = "header",
    no_effect: Sequence[str] = (),
    aborted: RunAborted | None = None,
    campaigns: Sequence[dict[str, Any]] = (),
) -> list[SloResult]:
    out: list[SloResult] = []
    if aborted is not None:
        detail = f"the run was stopped at {aborted.at_s:g} s: {aborted.detail}"
        out.append(SloResult("abort", aborted.limit, aborted.actual, False, SLO_UNITS[aborted.slo], detail))
    if counts["submitted"] == 0 and not campaigns:
        # Nothing was sent, so nothing was tested: no SLO can be said to hold.
        detail = "no message was submitted: the run tested nothing"
        out.append(SloResult("submitted", 1, 0, False, "messages", detail))
    uncorrelated = counts.get("uncorrelated", 0)
    if uncorrelated:
        detail = correlation_failure(uncorrelated, esp_unmatched, correlation)
        out.append(SloResult("correlation", 0, uncorrelated, False, "messages", detail))

    def at_most(name: str, target: float | None, actual: float | None, unit: str, what: str) -> None:
        if target is None:
            return
        passed = actual is not None and actual <= target
        shown = "none measured" if actual is None else f"{actual:g} {unit}"
        out.append(SloResult(name, target, actual, passed, unit, f"{what}: {shown}, limit {target:g} {unit}"))

    at_most("max_lost", slo.max_lost, counts["lost"], "messages", "lost")
    limit = slo.dropped_limit(planned)
    share = f" ({100.0 * dropped / planned:.2f}%)" if planned else ""
    shown = f"{limit:g}" if isinstance(slo.max_dropped, int) else f"{slo.max_dropped} of them ({limit:,.4g})"
    detail = f"dropped by the load generator: {dropped:,} of {planned:,} planned arrivals{share}"
    detail += f", limit {shown}"
    out.append(SloResult("max_dropped", limit, dropped, dropped <= limit, "messages", detail))
    at_most("max_duplicated", slo.max_duplicated, counts["duplicated"], "messages", "duplicated")
    at_most("max_bounced", slo.max_bounced, counts["bounced"], "messages", "bounced")
    at_most("max_pending", slo.max_pending, counts["pending"], "messages", "pending at the deadline")
    at_most("p95_e2e_ms", slo.p95_e2e_ms, e2e.get("p95"), "ms", "end-to-end p95")
    at_most("p99_e2e_ms", slo.p99_e2e_ms, e2e.get("p99"), "ms", "end-to-end p99")
    if slo.max_recovery_s is not None:
        target = slo.max_recovery_s
        if not recover_s:
            out.append(SloResult("max_recovery_s", target, None, True, "s", "no fault window in this run"))
        elif no_effect:
            names, it = ", ".join(no_effect), "it" if len(no_effect) == 1 else "them"
            detail = (
                f"{len(no_effect)} of {len(recover_s)} fault window(s) had no effect ({names}): nothing was "
                f"refused, delayed, cut or failed in {it}, so no recovery was tested, limit {target:g} s"
            )
            worst = None if any(r is None for r in recover_s) else max(recover_s)
            out.append(SloResult("max_recovery_s", target, worst, False, "s", detail))
        elif any(r is None for r in recover_s):
            never = sum(r is None for r in recover_s)
            detail = f"{never} of {len(recover_s)} fault window(s) never recovered, limit {target:g} s"
            out.append(SloResult("max_recovery_s", target, None, False, "s", detail))
        else:
            at_most("max_recovery_s", target, max(recover_s), "s", "slowest recovery")
    if slo.min_throughput is not None:
        target = slo.min_throughput
        passed = throughput is not None and throughput >= target
        shown = "none measured" if throughput is None else f"{throughput:g} msg/s"
        detail = f"delivered over the load phase: {shown}, minimum {target:g} msg/s"
        out.append(SloResult("min_throughput", target, throughput, passed, "msg/s", detail))
    for c in campaigns:
        out += judge_campaign(slo, c)
    return out


def judge_campaign(slo: SloSpec, c: dict[str, Any]) -> list[SloResult]:
    """One campaign's objectives (its figures as report.json has them, mailstorm.reports.campaign): it
    started, and its missing, duplicated, suppressed_sent and duration within their limits."""
    cid, o, trig = c["id"], c["outcomes"], c["trigger"]
    out: list[SloResult] = []
    if not c["started"]:
        said = (
            f"{trig['code']} {trig['answer'] or ''}".strip() if trig["ok"] is not None else "no trigger sent"
        )
        detail = (
            f"campaign {cid} never started: the SUT refused its trigger ({trig['request']}: {said[:200]})"
        )
        out.append(SloResult(f"campaign_started[{cid}]", 1, 0, False, "campaigns", detail))
    subscribed = c["recipients"] - c["unsubscribed"]
    limits = (
        (
            "max_campaign_missing",
            slo.max_campaign_missing,
            o["missing"],
            f"of {subscribed:,} subscribers missing",
        ),
        ("max_campaign_duplicated", slo.max_campaign_duplicated, o["duplicated"], "subscribers duplicated"),
        (
            "max_suppressed_sent",
            slo.max_suppressed_sent,
            o["suppressed_sent"],
            "unsubscribed recipients sent to",
        ),
    )
    for name, limit, actual, what in limits:
        detail = f"campaign {cid}: {actual:,} {what}, limit {limit:,}"
        if name == "max_campaign_missing" and actual and c.get("unheaded"):
            detail += (
                f"; {c['unheaded']:,} acceptances reached listed addresses without the X-Mailstorm-Campaign "
                "header: if the SUT does not carry it, follow the campaign with correlation: recipient"
            )
        out.append(SloResult(f"{name}[{cid}]", limit, actual, actual <= limit, "recipients", detail))
    if slo.max_campaign_duration_s is not None:
        limit, took = slo.max_campaign_duration_s, c["times"]["completion_s"]
        passed = took is not None and took <= limit and o["missing"] == 0
        shown = "never completed" if took is None or o["missing"] else f"completed in {took:g} s"
        detail = f"campaign {cid}: {shown}, limit {limit:g} s"
        out.append(SloResult(f"max_campaign_duration_s[{cid}]", limit, took, passed, "s", detail))
    return out


_CARRIERS = {
    "header": f"the {CORRELATION_HEADER} header and Message-ID",
    "recipient": (
        f"the id in the envelope recipient (local+ID@domain), the {CORRELATION_HEADER} header and Message-ID"
    ),
    "body": f"the [mailstorm:ID] body token, the {CORRELATION_HEADER} header and Message-ID",
}


def correlation_failure(uncorrelated: int, esp_unmatched: int, correlation: str) -> str:
    """Why a run's correlation failed, naming the carriers that did not survive the pipeline."""
    carriers = _CARRIERS.get(correlation, _CARRIERS["header"])
    advice = "" if correlation == "recipient" else "; load.correlation: recipient survives rewritten headers"
    return (
        f"correlation failed: {esp_unmatched:,} ESP acceptances carry no known id; {carriers} did not "
        f"survive the pipeline ({uncorrelated:,} messages the SUT accepted are uncorrelated, not lost: "
        f"their fate is unknown{advice})"
    )
