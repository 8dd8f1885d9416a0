"""The runner's live metrics: ``GET /metrics`` in Prometheus text on loopback while a run goes.

What a dashboard or an alerting rule wants from the run itself, read from the live counters the console
shows (``mailstorm.harness.progress.LiveStats``, the fate module's incremental counts) at scrape time
only: a run nobody scrapes pays nothing per message. Served by prometheus-client's own HTTP server in a
daemon thread (measured in docs/benchmarks.md: the extra CPU at 1,000 msg/s). The values are read
across threads without a lock: each is one int, or one C-level copy of a dict or deque (atomic under
the GIL), and a scrape is a snapshot a few records old at worst.

``METRICS`` names every series this module exports (the Grafana dashboard in docs/ is tested against it).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import CollectorRegistry

from mailstorm.harness.progress import LATENCY_WINDOW_S, LiveStats

HOST = "127.0.0.1"

# name (as scraped: counters carry _total) -> help
METRICS: dict[str, str] = {
    "mailstorm_run_offered_total": "messages the load submitted (the reports' offered)",
    "mailstorm_run_accepted_total": "messages the SUT took (submitted and not refused)",
    "mailstorm_run_rejected_total": "messages the SUT refused",
    "mailstorm_run_dropped_total": "arrivals the load planned and could not send",
    "mailstorm_run_delivered_total": "messages at the ESP, once or more",
    "mailstorm_run_duplicated_total": "messages the ESP accepted more than once",
    "mailstorm_run_esp_accepted_total": "ESP acceptances (a duplicate counts again)",
    "mailstorm_run_esp_replies_total": "ESP replies other than an acceptance, by code ('cut': no reply)",
    "mailstorm_run_backlog": "messages the SUT took that are neither at the ESP nor refused",
    "mailstorm_run_e2e_p95_seconds": (
        f"95th percentile intended send -> ESP acceptance of the last {LATENCY_WINDOW_S} s's deliveries "
        "(NaN when none)"
    ),
    "mailstorm_run_fault_active": "1 for each fault active now (the timeline's windows, standing faults)",
    "mailstorm_run_faults_active": "how many faults are active now",
    "mailstorm_run_phase": "1 for the phase the run is in (start, load, drain, stop)",
}


class _Collector:
    def __init__(self, live: RunnerMetrics) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        s, help_ = self.live.stats, METRICS
        counters = {
            "offered": s.offered,
            "accepted": s.accepted,
            "rejected": s.rejected,
            "dropped": s.dropped,
            "delivered": s.delivered,
            "duplicated": s.duplicates,
            "esp_accepted": s.esp_accepted,
        }
        for name, value in counters.items():
            full = f"mailstorm_run_{name}"
            yield CounterMetricFamily(full, help_[f"{full}_total"], value=value)
        replies = CounterMetricFamily(
            "mailstorm_run_esp_replies", help_["mailstorm_run_esp_replies_total"], labels=["code"]
        )
        for code, n in sorted(dict(s.esp_replies).items()):
            replies.add_metric([code], n)
        yield replies
        yield GaugeMetricFamily("mailstorm_run_backlog", help_["mailstorm_run_backlog"], value=s.backlog)
        p95 = s.p95_ms()
        yield GaugeMetricFamily(
            "mailstorm_run_e2e_p95_seconds",
            help_["mailstorm_run_e2e_p95_seconds"],
            value=math.nan if p95 is None else p95 / 1000,
        )
        faults = list(self.live.faults)
        active = GaugeMetricFamily(
            "mailstorm_run_fault_active", help_["mailstorm_run_fault_active"], labels=["fault"]
        )
        for fault in faults:
            active.add_metric([fault], 1)
        yield active
        yield GaugeMetricFamily(
            "mailstorm_run_faults_active", help_["mailstorm_run_faults_active"], value=len(faults)
        )
        phase = GaugeMetricFamily("mailstorm_run_phase", help_["mailstorm_run_phase"], labels=["phase"])
        phase.add_metric([self.live.phase], 1)
        yield phase


class RunnerMetrics:
    """Serves ``stats`` (and the ``faults`` and ``phase`` the runner sets as it goes) at
    ``http://127.0.0.1:<port>/metrics`` from ``start()`` to ``stop()``."""

    def __init__(self, stats: LiveStats, port: int = 0) -> None:
        self.stats = stats
        self.faults: list[str] = []
        self.phase = "start"
        self._port = port
        self._server = None
        self._thread: threading.Thread | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def start(self) -> RunnerMetrics:
        self._server, self._thread = start_http_server(self._port, addr=HOST, registry=self.registry)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
