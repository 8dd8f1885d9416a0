"""The runner's live /metrics (mailstorm.harness.metrics), scraped over HTTP with a real client, and the
Grafana dashboard in docs/ checked against what it exports."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mailstorm.harness.metrics import METRICS, RunnerMetrics
from mailstorm.harness.progress import LiveStats
from tests.records import accepted, replied, submit

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_NS = 1_000_000_000


def scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample as name -> {sorted labels: value}."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


@pytest.fixture
def served():
    stats = LiveStats()
    metrics = RunnerMetrics(stats).start()
    yield stats, metrics
    metrics.stop()


def test_metrics_follow_the_live_counts(served) -> None:
    stats, metrics = served
    now = time.time_ns()
    records = []
    # 20 messages submitted; 19 delivered with 100..280 ms latency, ESP acceptances read first for half
    # of them (as the ledger tail meets them: esp-*.jsonl sorts before load-*.jsonl); one refused.
    for i in range(20):
        sub = msgspec.structs.replace(submit(f"m{i}", intended=now - 2 * _NS), t=now - 2 * _NS)
        esp = msgspec.structs.replace(accepted(f"m{i}"), t=now - 2 * _NS + (100 + 10 * i) * 1_000_000)
        if i == 19:
            records.append(sub)
        elif i % 2:
            records += [esp, sub]
        else:
            records += [sub, esp]
    records.append(msgspec.structs.replace(accepted("m3"), t=now))  # a duplicate
    records += [replied("m19", 451), replied("m19", 451), replied("m19", None)]
    stats.feed(iter(records))
    metrics.faults, metrics.phase = ["esp:down", "profile ses"], "load"

    got = scrape(metrics.url)
    assert set(got) == set(METRICS)  # every declared series, and no other
    one = {name: next(iter(v.values())) for name, v in got.items() if len(v) == 1}
    assert one["mailstorm_run_offered_total"] == 20
    assert one["mailstorm_run_accepted_total"] == 20
    assert one["mailstorm_run_delivered_total"] == 19
    assert one["mailstorm_run_duplicated_total"] == 1
    assert one["mailstorm_run_esp_accepted_total"] == 20
    assert one["mailstorm_run_backlog"] == 1
    assert got["mailstorm_run_esp_replies_total"] == {(("code", "451"),): 2, (("code", "cut"),): 1}
    # Nearest rank over 19 latencies 100..280 ms: the 19th (ceil(0.95 * 19) = 19), 280 ms.
    assert one["mailstorm_run_e2e_p95_seconds"] == pytest.approx(0.28)
    assert got["mailstorm_run_fault_active"] == {(("fault", "esp:down"),): 1, (("fault", "profile ses"),): 1}
    assert one["mailstorm_run_faults_active"] == 2
    assert got["mailstorm_run_phase"] == {(("phase", "load"),): 1}


def test_p95_is_nan_without_recent_deliveries(served) -> None:
    stats, metrics = served
    old = time.time_ns() - 60 * _NS
    stats.feed(iter([submit("a", intended=old), msgspec.structs.replace(accepted("a"), t=old + _NS)]))
    assert math.isnan(next(iter(scrape(metrics.url)["mailstorm_run_e2e_p95_seconds"].values())))


_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions, keywords, label
    names (inside {} or after by/without) or durations."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    names = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\()(?![A-Za-z0-9_:])", bare)
    return {n for n in names if n not in _PROMQL_WORDS}


def test_metric_names_of_promql() -> None:
    assert metric_names("sum by (code) (rate(x_total{code=~'4..'}[10s]))") == {"x_total"}
    assert metric_names("mailstorm_run_phase == 1 and on(phase) y") == {"mailstorm_run_phase", "y"}


def exported_names(url: str) -> set[str]:
    """The series a scrape declares (# TYPE), those with no sample yet included (a counter by label)."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    families = text_string_to_metric_families(text)
    return {f.name + "_total" if f.type == "counter" else f.name for f in families}


def test_every_dashboard_query_names_an_exported_metric(served) -> None:
    _, metrics = served
    exported = exported_names(metrics.url)
    assert exported == set(METRICS)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"], "the dashboard has no panel"
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        assert exprs, f"panel {panel['title']!r} has no query"
        for expr in exprs:
            names = metric_names(expr)
            assert names, f"panel {panel['title']!r}: {expr!r} reads no metric"
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r}: {expr!r} names {unknown}, not exported"
    # And the check can fail: a misspelt name is caught.
    assert metric_names("rate(mailstorm_run_deliverd_total[10s])") - exported == {
        "mailstorm_run_deliverd_total"
    }


def test_live_stats_follow_firing_alerts() -> None:
    """The live panel shows the alerts firing now (from ledger/alerts.jsonl, as the tail reads it)."""
    from mailstorm.harness.progress import Progress
    from mailstorm.ledger import AlertFiring, AlertResolved

    stats = LiveStats()
    line = Progress("t", 10)._line
    assert "alerts" not in line(stats, 1.0, "load", [])  # no alerts section: nothing said
    fire = {"labels": {}, "starts_at": None}
    stats.feed(
        iter(
            [
                AlertFiring(name="EspDown", fingerprint="a", **fire),
                AlertFiring(name="Backlog", fingerprint="b", **fire),
            ]
        )
    )
    assert line(stats, 1.0, "load", []).endswith("alerts: Backlog, EspDown")
    stats.feed(
        iter(
            [
                AlertResolved(name="EspDown", fingerprint="a", **fire),
                AlertResolved(name="Backlog", fingerprint="b", **fire),
            ]
        )
    )
    assert line(stats, 1.0, "load", []).endswith("alerts: -")
