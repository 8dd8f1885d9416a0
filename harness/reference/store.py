"""The durable queue: one SQLite file (WAL), one row per message not yet relayed or bounced.

A message is committed before the pipeline answers 250 for it, and deleted only after the ESP accepted
it (or it bounced), so a crash at any point loses nothing; a crash between the ESP's 250 and the delete
relays it again (at-least-once). WAL with ``synchronous=NORMAL`` makes a commit survive a process crash
(SIGKILL) without an fsync per message; ``fsync=True`` (``synchronous=FULL``) also survives power loss.

All SQLite work runs on one dedicated thread with one connection. Writes arriving while a transaction is
being committed are grouped into the next transaction (group commit), so concurrent SMTP sessions share
one commit instead of queueing for one each.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS queue (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a queue id names one message forever
    corr      TEXT NOT NULL,                      -- correlation id (X-Mailstorm-Id, else Message-ID)
    mail_from TEXT NOT NULL,
    rcpts     TEXT NOT NULL,                      -- JSON list of recipients still to deliver
    data      BLOB NOT NULL,                      -- the message exactly as received
    attempts  INTEGER NOT NULL DEFAULT 0,         -- failed relay attempts so far
    next_at   REAL NOT NULL,                      -- UTC seconds: not before this (survives restarts)
    created   REAL NOT NULL
)
"""
INSERT = "INSERT INTO queue (corr, mail_from, rcpts, data, next_at, created) VALUES (?,?,?,?,?,?)"
# Campaigns (mailstorm.harness.reference.campaigns): each one's checkpoint (the next list row to fan out),
# and the idempotency key of every recipient already queued (campaign id + address), so a fan-out
# resumed after a crash queues no one twice even if it re-reads rows before its checkpoint.
CAMPAIGN_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS campaign (
    id        TEXT PRIMARY KEY,
    body      TEXT NOT NULL,                      -- the trigger's JSON body, as received
    next_row  INTEGER NOT NULL DEFAULT 0,         -- list rows before this one are queued (or skipped)
    done      INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE TABLE IF NOT EXISTS campaign_key (key TEXT PRIMARY KEY)",
)
# Webhook events the receiver counted (mailstorm.harness.reference.webhooks): one row per event id, so a
# redelivered event is counted once, also across a crash (the row is committed before the 2xx).
EVENT_SCHEMA = """CREATE TABLE IF NOT EXISTS webhook_event (
    event_id  TEXT PRIMARY KEY,
    event     TEXT NOT NULL,                      -- the canonical kind: delivered, open, click...
    api       TEXT NOT NULL,                      -- the webhook format it came in
    t         REAL NOT NULL
)"""


@dataclass(frozen=True, slots=True)
class Row:
    id: int
    corr: str
    mail_from: str
    rcpts: list[str]
    data: bytes
    attempts: int


def count_rows(path: Path) -> int | None:
    """Queue depth read from outside the pipeline (read-only; works while it is paused or dead)."""
    rows = _read_only(path, "SELECT count(*) FROM queue")
    return None if rows is None else rows[0][0]


def queued_ids(path: Path) -> list[tuple[int, str]] | None:
    """(queue id, correlation id) of every queued message, read from outside the pipeline like
    ``count_rows``: what the pipeline still holds."""
    return _read_only(path, "SELECT id, corr FROM queue ORDER BY id")


def _read_only(path: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """``sql``'s rows from the queue file opened read-only; None when there is no readable queue yet."""
    if not path.exists():
        return None
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return None  # created but not yet initialised
    finally:
        conn.close()


class Store:
    """The queue file, used from one asyncio loop; ``open`` before use, ``close`` at the end."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue")
        self._conn: sqlite3.Connection | None = None
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future]] = []
        self._flusher: asyncio.Task | None = None
        self.depth = 0
        self._sent_fd: int | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def open(self) -> list[tuple[int, int, float]]:
        """Open (create) the file; return every queued row as (id, attempts, next_at) to resume."""
        return await self._run(self._open)

    def _open(self) -> list[tuple[int, int, float]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if self._fsync else 'NORMAL'}")
        conn.execute(SCHEMA)
        for sql in CAMPAIGN_SCHEMA:
            conn.execute(sql)
        conn.execute(EVENT_SCHEMA)
        self._forget_sent(conn)
        self._conn = conn
        rows = conn.execute("SELECT id, attempts, next_at FROM queue ORDER BY id").fetchall()
        self.depth = len(rows)
        return rows

    # -- the sent log: relayed campaign rows whose delete the crash may have cut short --------------

    @property
    def sent_log(self) -> Path:
        return self.path.with_name(self.path.name + ".sent")

    def mark_sent(self, qid: int) -> None:
        """Written the moment the ESP said 250 for a campaign row, before the (group-committed) delete:
        a SIGKILL in between leaves the id here and the next start forgets the row instead of relaying
        it again. An append of one short line: atomic, and survives a process crash."""
        if self._sent_fd is None:
            self._sent_fd = os.open(self.sent_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(self._sent_fd, b"%d\n" % qid)

    def _forget_sent(self, conn: sqlite3.Connection) -> None:
        if not self.sent_log.exists():
            return
        ids = [(int(x),) for x in self.sent_log.read_bytes().split() if x.isdigit()]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM queue WHERE id=?", ids)
        conn.execute("COMMIT")
        self.sent_log.unlink()

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        if self._sent_fd is not None:
            os.close(self._sent_fd)
            self._sent_fd = None
        self._thread.shutdown(wait=True)

    # -- operations -------------------------------------------------------------------------------

    async def add(self, corr: str, mail_from: str, rcpts: list[str], data: bytes) -> int:
        """Commit a new message; returns its queue id once it is durable."""
        now = time.time()
        args = (corr, mail_from, orjson.dumps(rcpts).decode(), data, now, now)
        qid = await self._write(lambda c: c.execute(INSERT, args).lastrowid)
        self.depth += 1
        return qid

    async def remove(self, qid: int) -> None:
        """The message is done (relayed or bounced): forget it."""
        removed = await self._write(lambda c: c.execute("DELETE FROM queue WHERE id=?", (qid,)).rowcount)
        self.depth -= removed

    async def defer(self, qid: int, attempts: int, next_at: float, rcpts: list[str] | None = None) -> None:
        """Record a failed attempt (and, after a partial delivery, the recipients still owed)."""
        if rcpts is None:
            sql, args = "UPDATE queue SET attempts=?, next_at=? WHERE id=?", (attempts, next_at, qid)
        else:
            sql = "UPDATE queue SET attempts=?, next_at=?, rcpts=? WHERE id=?"
            args = (attempts, next_at, orjson.dumps(rcpts).decode(), qid)
        await self._write(lambda c: c.execute(sql, args))

    async def fan_out(
        self, campaign_id: str, rows: list[tuple[str, str, bytes]], mail_from: str, next_row: int
    ) -> list[int]:
        """One batch of a campaign, in one transaction: a queue row per (key, recipient, message) whose
        key is new, and the checkpoint moved to ``next_row``. Returns the new queue ids."""
        now = time.time()

        def op(c: sqlite3.Connection) -> list[int]:
            qids = []
            for key, rcpt, data in rows:
                if c.execute("INSERT OR IGNORE INTO campaign_key (key) VALUES (?)", (key,)).rowcount:
                    args = (key, mail_from, orjson.dumps([rcpt]).decode(), data, now, now)
                    qids.append(c.execute(INSERT, args).lastrowid)
            c.execute("UPDATE campaign SET next_row=? WHERE id=?", (next_row, campaign_id))
            return qids

        qids = await self._write(op)
        self.depth += len(qids)
        return qids

    async def campaign_begin(self, campaign_id: str, body: str) -> bool:
        """Record a new campaign (False: it is known already, and resumes or is done)."""
        sql = "INSERT OR IGNORE INTO campaign (id, body) VALUES (?, ?)"
        return bool(await self._write(lambda c: c.execute(sql, (campaign_id, body)).rowcount))

    async def campaign_done(self, campaign_id: str) -> None:
        await self._write(lambda c: c.execute("UPDATE campaign SET done=1 WHERE id=?", (campaign_id,)))

    async def campaigns_open(self) -> list[tuple[str, str, int]]:
        """(id, body, next_row) of every campaign whose fan-out did not finish: resumed at start."""
        sql = "SELECT id, body, next_row FROM campaign WHERE done=0 ORDER BY rowid"
        return await self._run(lambda: self._conn.execute(sql).fetchall())

    async def count_events(self, events: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
        """Count (event id, kind, format) events in one transaction; returns the (event id, kind) of
        those not counted before (a redelivery is not), once they are durable."""
        now = time.time()
        sql = "INSERT OR IGNORE INTO webhook_event (event_id, event, api, t) VALUES (?,?,?,?)"

        def op(c: sqlite3.Connection) -> list[tuple[str, str]]:
            return [
                (eid, kind) for eid, kind, api in events if c.execute(sql, (eid, kind, api, now)).rowcount
            ]

        return await self._write(op)

    async def event_counts(self) -> dict[str, int]:
        """Events counted so far, per kind (what a restart resumes its counts from)."""
        sql = "SELECT event, count(*) FROM webhook_event GROUP BY event"
        return dict(await self._run(lambda: self._conn.execute(sql).fetchall()))

    async def load(self, qid: int) -> Row | None:
        def read(c: sqlite3.Connection) -> Row | None:
            r = c.execute(
                "SELECT id, corr, mail_from, rcpts, data, attempts FROM queue WHERE id=?", (qid,)
            ).fetchone()
            return None if r is None else Row(r[0], r[1], r[2], orjson.loads(r[3]), bytes(r[4]), r[5])

        return await self._run(lambda: read(self._conn))

    # -- machinery --------------------------------------------------------------------------------

    async def _run(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def _write(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await fut

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                results = await self._run(lambda b=batch: self._commit([op for op, _ in b]))
            except Exception as exc:  # the whole transaction rolled back: every caller hears of it
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

    def _commit(self, ops: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [op(conn) for op in ops]
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return results
