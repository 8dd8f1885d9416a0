"""The fake ESP's HTTP side: the ESP APIs served by aiohttp in the fake ESP's event loop, and webhooks.

``start(ctx)`` is what mailstorm.fake_esp.server calls in each worker (``ctx``: its WorkerContext, sharing the
worker's engine, ledger writer and counters) when ``--http-port`` or ``--webhook-url``/``--webhooks``
is given: it serves every ESP API on ``spec.http_port`` and, when ``spec.webhooks`` is set, posts events
for every message the worker accepts (SMTP or HTTP) through a WebhookPoster, which holds its posts while
an outage takes the webhooks down.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from mailstorm.errors import UserError
from mailstorm.fake_esp.auth import Credentials
from mailstorm.fake_esp.http.handshake import https_context
from mailstorm.fake_esp.http.server import HttpApiServer, http_status
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.fake_esp.server import webhook_keys
from mailstorm.fake_esp.webhooks.poster import WebhookPoster
from mailstorm.fake_esp.webhooks.suppression import Suppressions
from mailstorm.netguard import check_address


class HttpSide:
    """What ``start`` started in one worker; ``close()`` stops it (drains webhooks first)."""

    def __init__(self, server: HttpApiServer | None, poster: WebhookPoster | None):
        self.server = server
        self.poster = poster

    async def close(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.poster is not None:
            await self.poster.stop()


async def start(ctx: Any) -> HttpSide:
    spec = ctx.spec
    profile = load_profile(spec.profile) if spec.profile else None
    ledger = ctx.ledger
    poster = None
    # The ESPs' suppression lists: the poster adds to them, the APIs that refuse at send read them.
    suppressions = Suppressions(ctx.engine.shared)
    if spec.webhooks is not None:
        for url in (spec.webhooks.url, spec.webhooks.via):  # events go to loopback only (no traffic off-box)
            if url is not None:
                check_address(urlsplit(url).hostname or "", what="webhook URL")
        poster = WebhookPoster(
            spec.webhooks,
            ledger,
            default_format=profile.api if profile else None,
            correlation_header=spec.correlation_header,
            outage=lambda: ctx.engine.outage("webhooks"),
            suppressions=suppressions,
            keys=webhook_keys(spec),  # the parent made them: every worker signs with the same keys
            control=spec.control_url,
        )
        await poster.start()
        ctx.accepted_hooks.append(poster.notify)
    server = None
    if spec.http_port is not None:
        server = HttpApiServer(
            ctx.engine,
            ledger,
            profile=profile,
            correlation_header=spec.correlation_header,
            correlation=spec.correlation,
            max_message_size=spec.max_message_size,
            counters=ctx.counters,
            on_accepted=lambda kept: _tell(ctx.accepted_hooks, kept),
            credentials=Credentials(spec.auth),
            suppressions=suppressions,
        )
        # --tls: the APIs are https only, as ESPs' are; the engine's tls faults act on its handshakes too.
        https = https_context(ctx.tls, ctx.engine, ledger, ctx.counters) if ctx.tls is not None else None
        try:
            await server.start(spec.bind, spec.http_port, reuse_port=spec.processes > 1, ssl_context=https)
        except OSError as exc:
            if poster is not None:
                await poster.stop(0)
            where = f"--http-port {spec.http_port}: cannot listen on {spec.bind}"
            raise UserError(f"{where}: {exc.strerror}") from None
    return HttpSide(server, poster)


def _tell(hooks: list[Any], kept: dict[str, Any]) -> None:
    """Every accepted hook of the worker (its message store, the webhook poster) hears of the message."""
    for hook in hooks:
        hook(kept)


__all__ = ["HttpApiServer", "HttpSide", "http_status", "start"]
