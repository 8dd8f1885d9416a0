"""The pipeline's own monitoring: periodic ``sut.queue`` records, and an HTTP health/metrics endpoint.

GET /health answers 200 {"status": "ok", ...} while relaying works and 503 {"status": "degraded", ...}
once every relay attempt has failed for ``DEGRADED_AFTER_S`` (the ESP is down, throttling everything, or
unreachable): what an operator's probe would alert on. GET /metrics is Prometheus text with the queue
depth and the accepted/relayed/deferred/bounced counters, and the webhook events counted per kind. The
same server takes POST /campaigns, the campaign trigger (mailstorm.harness.reference.campaigns), and the
ESP's webhooks: POST /webhooks/<format> and GET /analytics (mailstorm.harness.reference.webhooks).
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailstorm.ledger import LedgerWriter, SutQueue

# One failed attempt is noise (a greylist, a blip); a second of nothing but failures is an incident.
DEGRADED_AFTER_S = 1.0

# The *_created series say when a counter was made: noise for a probe, and this is the process's own registry.
disable_created_metrics()


class Monitor:
    """Reads the live pipeline state through ``state()`` (a dict of counters and depth)."""

    def __init__(self, pipeline, ledger: LedgerWriter, interval_s: float) -> None:
        self.pipeline = pipeline
        self.ledger = ledger
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.registry = CollectorRegistry()
        self._depth = Gauge(
            "mailstorm_sut_queue_depth", "Messages queued, not yet relayed", registry=self.registry
        )
        self._counters = {
            name: Counter(f"mailstorm_sut_{name}", f"Messages {name}", registry=self.registry)
            for name in ("accepted", "relayed", "deferred", "bounced")
        }
        self._last = dict.fromkeys(self._counters, 0)
        self._events = Counter(
            "mailstorm_sut_webhook_events",
            "Webhook events counted, per kind",
            ["event"],
            registry=self.registry,
        )
        self._hooks = {
            name: Counter(f"mailstorm_sut_webhook_{name}", what, registry=self.registry)
            for name, what in (
                ("redelivered", "Webhook events posted again and not counted again"),
                ("refused", "Webhook posts refused (bad signature, unreadable body)"),
            )
        }
        self._last_events: dict[str, int] = {}
        self._last_hooks = dict.fromkeys(self._hooks, 0)
        self._runner: web.AppRunner | None = None

    def degraded(self) -> bool:
        since = self.pipeline.deliverer.failing_since
        return since is not None and time.monotonic() - since >= DEGRADED_AFTER_S

    async def sample_forever(self) -> None:
        while True:
            self.ledger.write(SutQueue(depth=self.pipeline.store.depth))
            await asyncio.sleep(self.interval_s)  # the sampling period itself

    async def serve(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/campaigns", self.pipeline.campaigns.handle)  # the campaign trigger
        app.router.add_post("/webhooks/{format}", self.pipeline.webhooks.handle)
        app.router.add_get("/analytics", self.pipeline.webhooks.analytics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: web.Request) -> web.Response:
        degraded = self.degraded()
        body = {
            "status": "degraded" if degraded else "ok",
            "queue_depth": self.pipeline.store.depth,
            "uptime_s": round(time.monotonic() - self.started, 3),
            **self.pipeline.counts(),
            "campaign_queued": self.pipeline.campaigns.queued,
        }
        return web.json_response(body, status=503 if degraded else 200)

    async def _metrics(self, request: web.Request) -> web.Response:
        self._depth.set(self.pipeline.store.depth)
        for name, total in self.pipeline.counts().items():
            self._counters[name].inc(total - self._last[name])
            self._last[name] = total
        hooks = self.pipeline.webhooks
        for kind, total in hooks.counts.items():
            self._events.labels(event=kind).inc(total - self._last_events.get(kind, 0))
            self._last_events[kind] = total
        for name, total in (("redelivered", hooks.redelivered), ("refused", hooks.refused)):
            self._hooks[name].inc(total - self._last_hooks[name])
            self._last_hooks[name] = total
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
