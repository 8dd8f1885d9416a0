"""One reference pipeline process: wires the queue, SMTP in, delivery and monitoring, and shuts down
cleanly on SIGTERM/SIGINT (stop accepting, let attempts in flight finish within the grace, keep the
rest queued for the next start)."""

from __future__ import annotations

import asyncio
import logging
import signal

from mailstorm.harness.reference.campaigns import Campaigns
from mailstorm.harness.reference.config import PipelineConfig
from mailstorm.harness.reference.delivery import Deliverer
from mailstorm.harness.reference.inbound import InboundHandler, InboundSMTP
from mailstorm.harness.reference.monitor import Monitor
from mailstorm.harness.reference.relay import HttpRelay, RelaySecurity, SmtpRelay
from mailstorm.harness.reference.store import Store
from mailstorm.harness.reference.webhooks import WebhookReceiver
from mailstorm.ledger import LedgerWriter, SutQueue

log = logging.getLogger("mailstorm.reference")


class Pipeline:
    def __init__(self, cfg: PipelineConfig) -> None:
        self.cfg = cfg
        self.ledger = LedgerWriter(cfg.ledger_dir, cfg.source)
        self.store = Store(cfg.queue_path, fsync=cfg.fsync)
        self.deliverer = Deliverer(
            self.store,
            self.ledger,
            self._relay_factory(),
            concurrency=cfg.concurrency,
            max_attempts=cfg.max_attempts,
            backoff_base_s=cfg.backoff_base_s,
            backoff_max_s=cfg.backoff_max_s,
            seed=cfg.seed,
            relays=len(cfg.relays),
            failover_after=cfg.failover_after,
            probe_s=cfg.failback_probe_s,
        )
        self.inbound = InboundHandler(
            self.store, self.ledger, cfg.networks(), on_accept=lambda qid: self.deliverer.schedule.put(qid)
        )
        self.campaigns = Campaigns(self.store, self.deliverer.schedule.put)
        self.webhooks = WebhookReceiver(self.store, self.ledger, cfg.webhook_key)
        self.monitor = Monitor(self, self.ledger, cfg.queue_interval_s)

    def _relay_factory(self):
        """relay index -> a new client of that relay (SMTP: one per worker; HTTP: one shared pool)."""
        cfg = self.cfg
        security = RelaySecurity(cfg.relay_tls, cfg.relay_ca, cfg.relay_auth)
        shared: dict[int, HttpRelay] = {}

        def make(index: int):
            target = cfg.relays[index]
            if target.scheme == "smtp":
                return SmtpRelay(target, cfg.relay_timeout_s, security)
            if index not in shared:
                shared[index] = HttpRelay(target, cfg.relay_timeout_s, cfg.api_key, cfg.concurrency, security)
            return shared[index]

        return make

    def counts(self) -> dict[str, int]:
        return {"accepted": self.inbound.accepted, **self.deliverer.counts}

    async def run(self) -> None:
        cfg = self.cfg
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        resumed = await self.store.open()
        await self.webhooks.open()
        for qid, _attempts, next_at in resumed:  # rows in flight at a crash are due again: at-least-once
            self.deliverer.schedule.put(qid, next_at)
        self.deliverer.start()
        await self.campaigns.resume()
        sampler = asyncio.create_task(self.monitor.sample_forever())
        if cfg.http_port is not None:
            await self.monitor.serve(cfg.listen_host, cfg.http_port)
        server = await loop.create_server(
            lambda: InboundSMTP(
                self.inbound,
                hostname="reference.mailstorm.test",
                ident="mailstorm reference pipeline",
                data_size_limit=cfg.max_message_size,
                decode_data=False,
            ),
            cfg.listen_host,
            cfg.listen_port,
        )
        log.info(
            "listening on %s:%s, relaying to %s, %d queued from before",
            cfg.listen_host,
            cfg.listen_port,
            ", then ".join(map(str, cfg.relays)),
            len(resumed),
        )
        await stop.wait()

        log.info("stopping: %d queued", self.store.depth)
        server.close()
        await server.wait_closed()
        await self.campaigns.close()
        await self.deliverer.stop(cfg.grace_s)
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await self.monitor.close()
        await self.store.close()
        self.ledger.write(SutQueue(depth=self.store.depth))
        self.ledger.close()
