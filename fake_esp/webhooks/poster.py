"""WebhookPoster: turns accepted messages into ESP events and POSTs them, with its own faults and retries.

``notify(accepted)`` (called in the event loop for each esp.accepted record, SMTP or HTTP) decides each
recipient's outcome and events (mailstorm.fake_esp.webhooks.outcomes: its ESP's suppression list, the
outcome addresses, the WebhookSpec.events rates; one esp.outcome ledger record per recipient, which also
names the events the ESP has no webhook event for: those are not posted), applies the webhook faults
(drop / duplicate / reorder / delay) and queues them. A dispatcher POSTs them in the ESP's format
(mailstorm.fake_esp.webhooks.formats; SendGrid, SendPulse and Mandrill batch up to the profile's
``batch_max`` events per POST, bounded by the format's ``per_post``) and retries a failed POST
(connection error, timeout, non-2xx) on that ESP's published schedule (profile
``webhook.retry_schedule_s`` times ``retry_time_scale``), stopping at once on the statuses the ESP gives
up on and never retrying events the ESP does not retry (Mailgun: delivered).

Ledger: one esp.webhook record per event per attempt: api (format), event, id (correlation id),
esp_id, rcpt, event_id, url, status (HTTP status, null when no answer), attempt (1..; 0 for a dropped
event, which is never posted), fault (null | "drop" | "duplicate" | "reorder" | "delay"), copy (1 for the
second post of a duplicated event), final (true on the last attempt: delivered, given up, or out of
retries), ok. So the ledger says which events were posted twice, which never, and which the URL missed.

Authentication (mailstorm.fake_esp.webhooks.signing): each POST is signed as its ESP signs (the
format's ``render`` with the signing key, then its ``sign`` with the run's keys and the URL) and carries
the spec's ``auth`` headers. The ``bad_signature`` fault (drawn per event, only when its probability is
set, so other seeds' draws do not move, and only for a POST that carries a signature or credentials)
signs that event's POSTs with wrong secrets and sends wrong credentials; its records say ``fault:
bad_signature`` (a verifying receiver is right to refuse it; the retries carry the same wrong
signature). A format with a handshake (SES through SNS) posts it once, before its first event (an
``esp.subscription`` record per attempt, retried on the ESP's schedule); events follow whether or not
the endpoint confirmed (the ledger says whether it did). The ledger's ``url`` never shows a password.

An ESP outage that takes the webhooks down (``outage`` returns it; the outage fault's ``on`` names
webhooks, the default) holds every POST until it ends: a down ESP posts nothing. Each held POST writes
one esp.fault record first (ftype outage, phase "webhook", action "hold", proto "webhooks", events: how
many it carries, delay_s: how long the outage has left).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from mailstorm.fake_esp.engine import Outage
from mailstorm.fake_esp.profiles import WebhookPolicy, load_profile
from mailstorm.fake_esp.webhooks.formats import (
    WEBHOOK_FORMATS,
    Event,
    handshake,
    per_post,
    posts,
    render,
    sign,
)
from mailstorm.fake_esp.webhooks.outcomes import Outcomes
from mailstorm.fake_esp.webhooks.signing import (
    Signer,
    WebhookKeys,
    auth_headers,
    redact_url,
    url_with_wrong_password,
)
from mailstorm.fake_esp.webhooks.spec import WebhookSpec
from mailstorm.fake_esp.webhooks.suppression import Suppressions
from mailstorm.ledger import (
    CORRELATION_HEADER,
    EspFault,
    EspOutcome,
    EspSubscription,
    EspWebhook,
    LedgerWriter,
)

log = logging.getLogger("mailstorm.fake_esp.webhooks")
REORDER_HOLD_S = 1.0
MAX_IN_FLIGHT = 16  # concurrent POSTs: a real ESP spreads its posts; 16 keeps a small receiver busy
HOLD_POLL_S = 0.02  # how often a held POST looks whether the outage is over (the listeners' tick)


@dataclass(frozen=True, slots=True)
class _Item:
    fmt: str
    event: Event
    fault: str | None
    copy: int = 0
    bad: bool = False  # the bad_signature fault: signed with wrong secrets


class WebhookPoster:
    """Posts events for accepted messages to ``spec.url``; ``start()`` in the loop, ``stop()`` drains."""

    def __init__(
        self,
        spec: WebhookSpec,
        ledger: LedgerWriter,
        *,
        default_format: str | None = None,
        correlation_header: str = CORRELATION_HEADER,
        outage: Callable[[], Outage | None] | None = None,
        suppressions: Suppressions | None = None,
        keys: WebhookKeys | None = None,
        control: str = "",
    ) -> None:
        self.spec = spec
        self.outcomes = Outcomes(spec.events, spec.seed, suppressions or Suppressions())
        self.signer = Signer(spec.url, spec.signing_key, keys, control, spec.sns_signature_version)
        self.url = redact_url(spec.url)  # what the ledger shows
        self.target = spec.via or spec.url  # where the POSTs go (the chaos proxy, when it fronts them)
        self._handshakes: dict[str, asyncio.Task[None]] = {}
        self._forgeable_formats: dict[str, bool] = {}
        self._outage = outage
        self.ledger = ledger
        self.default_format = default_format
        self.header = correlation_header
        self.rng = random.Random(spec.seed)
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._held: deque[_Item] = deque()  # reordered events wait here for the next one
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sem = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._session: aiohttp.ClientSession | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self.pending = 0  # events queued, delayed or being posted (for drains and tests)

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.spec.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._dispatcher = asyncio.get_running_loop().create_task(self._dispatch())

    async def stop(self, drain_s: float = 5.0) -> None:
        """Wait up to ``drain_s`` for queued events to be posted, then cancel what is left."""
        self._release_held()
        deadline = time.monotonic() + drain_s
        while self.pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # polling a drain condition, bounded by drain_s
        tasks = [self._dispatcher, *self._tasks, *self._handshakes.values()]
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._session is not None:
            await self._session.close()

    # -- events in ---------------------------------------------------------------------------------
    def notify(self, accepted: dict[str, Any]) -> None:
        """Queue the events of one accepted message (an esp.accepted record plus sender and to)."""
        fmt = self.spec.format or accepted.get("api") or self.default_format
        if fmt is None or WEBHOOK_FORMATS.get(fmt) is None:
            return  # a platform API faked for its rate limits (hubspot, klaviyo) posts no webhooks
        esp_id = accepted.get("esp_id") or uuid.uuid4().hex
        for rcpt in accepted.get("to") or []:
            outcome = self.outcomes.decide(fmt, accepted, rcpt)
            unposted = [name for name in outcome.events if not posts(fmt, name)]
            self.ledger.write(
                EspOutcome(
                    api=fmt, id=accepted.get("id"), esp_id=esp_id, rcpt=rcpt, outcome=outcome.final,
                    events=list(outcome.events), unposted=unposted, source=outcome.source,
                    detail=outcome.detail or None, suppresses=outcome.suppresses is not None,
                )
            )  # fmt: skip
            for name in outcome.events:
                if name in unposted:
                    continue
                ev = Event(
                    event=name,
                    event_id=uuid.uuid4().hex,
                    id=accepted.get("id"),
                    esp_id=esp_id,
                    rcpt=rcpt,
                    sender=accepted.get("sender") or "",
                    ts=time.time(),
                    header=self.header,
                    echo=accepted.get("echo") or {},
                    detail=outcome.detail if name == "dropped" else "",
                )
                self._fault_and_queue(fmt, ev)

    def _fault_and_queue(self, fmt: str, ev: Event) -> None:
        f = self.spec.faults
        if self.rng.random() < f.drop:
            self._record(_Item(fmt, ev, "drop"), status=None, attempt=0, final=True, ok=False)
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        reorder = self.rng.random() < f.reorder
        delay = f.delay_ms + (self.rng.uniform(0, f.jitter_ms) if f.jitter_ms else 0.0)
        bad = bool(f.bad_signature) and self._forgeable(fmt) and self.rng.random() < f.bad_signature
        for copy in range(copies):
            fault = "duplicate" if copy else ("reorder" if reorder else ("delay" if delay else None))
            item = _Item(fmt, ev, "bad_signature" if bad else fault, copy, bad)
            self.pending += 1
            if reorder and copy == 0:
                # Posted after the next event (out of order), or after REORDER_HOLD_S if none comes.
                self._held.append(item)
                asyncio.get_running_loop().call_later(REORDER_HOLD_S, self._release_held)
                continue
            self._later(item, delay / 1000.0)
            self._release_held(delay / 1000.0)

    def _forgeable(self, fmt: str) -> bool:
        """Whether a POST of ``fmt`` to this URL carries anything a wrong secret changes (a signature,
        credentials): the bad_signature fault is drawn only where it can act, so its records never
        name a POST that went out as a good one would (an unsigned format without credentials)."""
        if fmt not in self._forgeable_formats:
            if self.spec.auth is not None or url_with_wrong_password(self.target) != self.target:
                self._forgeable_formats[fmt] = True
            else:
                sample = Event("delivered", "probe", None, "probe", "p@example.test", "", 0.0, self.header)
                posts = [
                    sign(fmt, *render(fmt, [sample], signing_key=s.signing_key), s)
                    for s in (self.signer, self.signer.wrong())
                ]
                self._forgeable_formats[fmt] = posts[0] != posts[1]
        return self._forgeable_formats[fmt]

    def _release_held(self, delay_s: float = 0.0) -> None:
        while self._held:
            self._later(self._held.popleft(), delay_s)

    def _later(self, item: _Item, delay_s: float) -> None:
        if delay_s > 0:
            asyncio.get_running_loop().call_later(delay_s, self._queue.put_nowait, item)
        else:
            self._queue.put_nowait(item)

    # -- posting -----------------------------------------------------------------------------------
    async def _dispatch(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            policy = _policy(first.fmt)
            # A batching ESP (SendGrid, SendPulse, Mandrill) posts what has piled up, up to its batch_max
            # and what its format carries; the others one event per POST.
            limit = per_post(first.fmt, policy.batch_max)
            while len(batch) < limit and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt.fmt != first.fmt or nxt.bad != first.bad:  # one POST: one signature
                    self._queue.put_nowait(nxt)
                    break
                batch.append(nxt)
            await self._sem.acquire()
            task = asyncio.get_running_loop().create_task(self._post(batch, policy))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._sem.release()

    async def _post(self, batch: list[_Item], policy: WebhookPolicy) -> None:
        fmt, bad = batch[0].fmt, batch[0].bad
        signer = self.signer.wrong() if bad else self.signer
        url = url_with_wrong_password(self.target) if bad else self.target
        body, headers = render(fmt, [i.event for i in batch], signing_key=signer.signing_key)
        schedule = [s * self.spec.retry_time_scale for s in policy.retry_schedule_s]
        no_retry = all(i.event.event in policy.no_retry_events for i in batch)
        attempt = 0
        try:
            await self._handshake(fmt, schedule)
            while True:
                attempt += 1
                await self._hold(len(batch))
                # Signed at each sending (SendGrid's timestamp is the sending's); credentials last, so
                # the spec's auth wins over a format's own Authorization.
                signed_body, signed = sign(fmt, body, headers, signer)
                signed |= auth_headers(self.spec.auth, wrong=bad)
                status, error = await self._send(url, signed_body, signed)
                ok = status is not None and 200 <= status < 300
                out_of_retries = no_retry or attempt > len(schedule) or status in policy.give_up_on
                final = ok or out_of_retries
                for item in batch:
                    self._record(item, status=status, attempt=attempt, final=final, ok=ok, error=error)
                if final:
                    return
                await asyncio.sleep(schedule[attempt - 1])
        finally:
            self.pending -= len(batch)

    async def _handshake(self, fmt: str, schedule: list[float]) -> None:
        """The format's handshake POST to this endpoint (SNS's SubscriptionConfirmation), once: every
        POST of the format waits for it to be answered or out of retries."""
        task = self._handshakes.get(fmt)
        if task is None:
            task = self._handshakes[fmt] = asyncio.get_running_loop().create_task(self._shake(fmt, schedule))
        await asyncio.shield(task)

    async def _shake(self, fmt: str, schedule: list[float]) -> None:
        post = handshake(fmt, self.signer)
        if post is None:
            return
        body, headers = post
        topic = str(headers.get("x-amz-sns-topic-arn", ""))
        headers = headers | auth_headers(self.spec.auth)
        for attempt in range(len(schedule) + 1):
            await self._hold(0)
            status, error = await self._send(self.target, body, headers)
            ok = status is not None and 200 <= status < 300
            self.ledger.write(
                EspSubscription(api=fmt, action="request", topic=topic, url=self.url, ok=ok, status=status,
                                error=error)
            )  # fmt: skip
            if ok or attempt == len(schedule):
                return
            await asyncio.sleep(schedule[attempt])

    async def _hold(self, events: int) -> None:
        """Wait while an outage takes the webhooks down (a down ESP posts nothing); record the hold."""
        outage = self._outage() if self._outage is not None else None
        if outage is None:
            return
        self.ledger.write(
            EspFault(
                fault=outage.fault, ftype="outage", phase="webhook", action="hold",
                delay_s=round(max(outage.until - time.time(), 0.0), 3), session=None, proto="webhooks",
                events=events,
            )
        )  # fmt: skip
        while outage is not None:
            await asyncio.sleep(HOLD_POLL_S)  # polling the outage's end, which the engine knows
            outage = self._outage()

    async def _send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None]:
        assert self._session is not None
        try:
            async with self._session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status, None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:200]

    def _record(
        self,
        item: _Item,
        *,
        status: int | None,
        attempt: int,
        final: bool,
        ok: bool,
        error: str | None = None,
    ) -> None:
        ev = item.event
        self.ledger.write(
            EspWebhook(
                api=item.fmt,
                event=ev.event,
                id=ev.id,
                esp_id=ev.esp_id,
                rcpt=ev.rcpt,
                event_id=ev.event_id,
                url=self.url,
                status=status,
                attempt=attempt,
                fault=item.fault,
                copy=item.copy,
                final=final,
                ok=ok,
                error=error,
            )
        )


def _policy(fmt: str) -> WebhookPolicy:
    policy = load_profile(fmt).webhook
    assert policy is not None, f"profile {fmt} has no webhook policy"
    return policy
