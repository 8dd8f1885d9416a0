"""The reference pipeline's campaigns: ``POST /campaigns`` reads a list and fans it out into the queue.

The body is the trigger's (docs/campaigns.md): ``campaign_id``, ``list_path`` (else ``list_url``, fetched),
``subject``, ``from``. The list is read before the answer (a list that cannot be read is a 422: the
campaign never started); the answer is 202, or 200 for a campaign already known (a repeated trigger
starts nothing twice). Then, in the background, the list is fanned out in batches of ``BATCH`` rows:
each batch is one transaction that queues a message per subscribed recipient whose idempotency key
(campaign id + address) is new and moves the campaign's checkpoint past the batch; unsubscribed rows are
skipped. A SIGKILL at any moment loses at most an uncommitted batch, which the restart (``resume``)
redoes from the checkpoint: no recipient is queued twice, none is skipped.

Relaying keeps its at-least-once rule, with one addition for campaign rows: the moment the ESP says 250
the row's id goes to the store's sent log, so a crash before the row's delete does not send it again
(mailstorm.harness.reference.store). Each message carries ``X-Mailstorm-Campaign: <campaign_id>``.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import logging
import time
from email.utils import formatdate

import aiohttp
import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mailstorm.harness.reference.store import Store
from mailstorm.ledger import CAMPAIGN_HEADER

log = logging.getLogger("mailstorm.reference")
PREFIX = "campaign:"  # a campaign row's correlation id: campaign:<id>:<address>, its idempotency key
BATCH = 500  # list rows per transaction: one commit per batch, a crash redoes at most one
LIST_FETCH_TIMEOUT_S = 30.0


class CampaignBody(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    campaign_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    list_path: str | None = None
    list_url: str | None = None
    subject: str = "Campaign"
    from_: str = Field(default="news@reference.mailstorm.test", alias="from")


def key(campaign_id: str, address: str) -> str:
    return f"{PREFIX}{campaign_id}:{address.lower()}"


def message(body: CampaignBody, address: str, name: str) -> bytes:
    mid = hashlib.sha256(key(body.campaign_id, address).encode()).hexdigest()[:32]
    head = (
        f"From: {body.from_}\r\nTo: <{address}>\r\nSubject: {body.subject}\r\n"
        f"Message-ID: <{mid}@reference.mailstorm.test>\r\nDate: {formatdate()}\r\n"
        f"{CAMPAIGN_HEADER}: {body.campaign_id}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    return (head + f"Hello {name or address},\r\n\r\nThis is {body.campaign_id}.\r\n").encode()


def parse_list(text: str) -> list[tuple[str, str, bool]]:
    """(address, name, unsubscribed) per row of an ``email,name,status`` list."""
    rows = []
    for rec in csv.DictReader(io.StringIO(text)):
        address = (rec.get("email") or "").strip()
        if address:
            rows.append((address, rec.get("name") or "", rec.get("status") == "unsubscribed"))
    return rows


class Campaigns:
    """The campaigns of one pipeline process; ``schedule(qid)`` hands a queued row to delivery."""

    def __init__(self, store: Store, schedule) -> None:
        self.store = store
        self.schedule = schedule
        self.queued = 0  # recipients queued by fan-out, this process
        self.skipped = 0  # unsubscribed rows skipped
        self._tasks: set[asyncio.Task] = set()

    async def handle(self, request: web.Request) -> web.Response:
        try:
            body = CampaignBody.model_validate(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            return web.json_response({"error": f"bad campaign body: {exc}"[:300]}, status=400)
        try:
            rows = await read_list(body)
        except (OSError, aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": f"cannot read the list: {exc}"}, status=422)
        raw = body.model_dump_json(by_alias=True)
        if not await self.store.campaign_begin(body.campaign_id, raw):
            return web.json_response({"campaign_id": body.campaign_id, "status": "known"}, status=200)
        self._start(body, rows, 0)
        answer = {"campaign_id": body.campaign_id, "status": "accepted", "recipients": len(rows)}
        return web.json_response(answer, status=202)

    async def resume(self) -> int:
        """Fan out the rest of every campaign a crash interrupted (from its checkpoint)."""
        open_ = await self.store.campaigns_open()
        for _cid, raw, next_row in open_:
            body = CampaignBody.model_validate_json(raw)
            try:
                rows = await read_list(body)
            except (OSError, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.error("campaign %s cannot resume: its list cannot be read: %s", body.campaign_id, exc)
                continue
            self._start(body, rows, next_row)
        return len(open_)

    def _start(self, body: CampaignBody, rows: list[tuple[str, str, bool]], next_row: int) -> None:
        task = asyncio.create_task(self._fan_out(body, rows, next_row), name=f"campaign-{body.campaign_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fan_out(self, body: CampaignBody, rows: list[tuple[str, str, bool]], start: int) -> None:
        t0 = time.monotonic()
        queued = 0
        for first in range(start, len(rows), BATCH):
            batch = rows[first : first + BATCH]
            items = [(key(body.campaign_id, a), a, message(body, a, n)) for a, n, gone in batch if not gone]
            self.skipped += len(batch) - len(items)
            qids = await self.store.fan_out(body.campaign_id, items, body.from_, first + len(batch))
            for qid in qids:
                self.schedule(qid)
            queued += len(qids)
            self.queued += len(qids)
        await self.store.campaign_done(body.campaign_id)
        took = time.monotonic() - t0
        log.info("campaign %s: %d queued from row %d in %.3fs", body.campaign_id, queued, start, took)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def read_list(body: CampaignBody) -> list[tuple[str, str, bool]]:
    if body.list_path:
        text = await asyncio.to_thread(lambda: open(body.list_path, encoding="utf-8").read())  # noqa: SIM115
    elif body.list_url:
        timeout = aiohttp.ClientTimeout(total=LIST_FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as s, s.get(body.list_url) as resp:
            resp.raise_for_status()
            text = await resp.text()
    else:
        raise ValueError("the body names neither list_path nor list_url")
    return parse_list(text)
