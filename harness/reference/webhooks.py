"""The reference pipeline's webhook receiver: the ESP's event posts in, counted once per event.

``POST /webhooks/<format>`` takes one post of a registered webhook format (mailstorm.fake_esp.webhooks:
the format of the ESP the pipeline relays to, or any other), checks its signature when the format signs
(mailstorm.harness.reference.signatures, with ``--webhook-key``; a bad or missing one is a 401 and counts
nothing), reads its events with the format's own ``read`` and counts each by its event id in the SQLite
store, committed before the 2xx: a redelivered event (an ESP retry, a duplicate post) is answered 200 and
not counted again, also after a crash. Each newly counted event is one ``sut.event`` record, written
after the commit (a kill in between loses the record, never the count). A body the format cannot read
is a 400; an unknown format a 404.

``GET /analytics`` answers the counts per canonical event kind as one JSON object (``{"open": 12, ...}``),
what a scenario's ``analytics.probe`` reads; the same counts are on ``/metrics`` as
``mailstorm_sut_webhook_events_total{event="open"}``, with the redeliveries and refused posts beside them.
"""

from __future__ import annotations

import logging
from collections import Counter

from aiohttp import web

from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS, read_events
from mailstorm.harness.reference.signatures import verify
from mailstorm.harness.reference.store import Store
from mailstorm.ledger import CORRELATION_HEADER, LedgerWriter, SutEvent

log = logging.getLogger("mailstorm.reference")


class WebhookReceiver:
    """Counts webhook events idempotently; ``open`` resumes the counts from the store."""

    def __init__(self, store: Store, ledger: LedgerWriter, key: str | None) -> None:
        self.store = store
        self.ledger = ledger
        self.key = key  # None: signatures are not checked
        self.counts: Counter[str] = Counter()  # events counted, per kind (the store's, resumed)
        self.redelivered = 0  # events posted again and not counted again, this process
        self.refused = 0  # posts refused (bad signature, unreadable body), this process

    async def open(self) -> None:
        self.counts = Counter(await self.store.event_counts())

    async def handle(self, request: web.Request) -> web.Response:
        fmt = request.match_info["format"]
        if WEBHOOK_FORMATS.get(fmt) is None:
            return web.json_response({"error": WEBHOOK_FORMATS.unknown(fmt)}, status=404)
        body = await request.read()
        if self.key is not None and not verify(fmt, body, request.headers, self.key, str(request.url)):
            self.refused += 1
            return web.json_response({"error": f"bad {fmt} webhook signature"}, status=401)
        try:
            events = read_events(fmt, body, CORRELATION_HEADER)
        except (
            Exception
        ) as exc:  # whatever a format's reader raises on a body it cannot read: a 400, never a 500
            self.refused += 1
            return web.json_response({"error": f"not a {fmt} webhook: {exc}"[:300]}, status=400)
        new = await self.store.count_events([(e["event_id"], e["event"], fmt) for e in events])
        for event_id, kind in new:
            self.counts[kind] += 1
            self.ledger.write(SutEvent(event=kind, event_id=event_id, api=fmt))
        self.redelivered += len(events) - len(new)
        return web.json_response({"counted": len(new), "redelivered": len(events) - len(new)})

    async def analytics(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.counts))
