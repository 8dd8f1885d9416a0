"""The ledger: the only contract between the processes that act and the analysis that judges.

Format. A run's ledger is a directory of JSON Lines files, one file per writing process, named
``<source>.jsonl`` (``esp-smtp-0``, ``load-1``, ``sut``, ``timeline``...). A process that restarts
appends to its own file again. Every record is one JSON object on one line with at least:

    t    int, UTC nanoseconds since the epoch when the record was made
    k    the record kind, one of ``Kind`` below
    src  the source (file) name that wrote it

and the fields documented with each kind. Unknown fields are allowed: readers ignore what they do not
know, so a newer writer never breaks an older report.

Durability. ``LedgerWriter.write`` hands the record to the OS with one ``os.write`` on an ``O_APPEND``
descriptor before it returns; callers write a record *before* sending the reply it describes, so a
SIGKILL of the writer loses no record of a reply already given (a machine crash may; ``fsync=True``
covers that at a cost). A torn last line (a kill during the write itself) is skipped by the reader and
counted in ``LedgerReader.torn_lines``.

Correlation. Messages are followed by the ``X-Mailstorm-Id`` header (configurable), falling back to the
Message-ID, because pipelines may rewrite Message-ID.

This module must stay free of gevent/locust imports: the fake ESP (asyncio), the Locust users (gevent)
and the reports (plain) all import it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

CORRELATION_HEADER = "X-Mailstorm-Id"
LEDGER_SUFFIX = ".jsonl"


class Kind(StrEnum):
    """Every record kind, with the fields it carries (beyond t, k, src)."""

    # -- fake ESP ---------------------------------------------------------------------------------
    # A message the ESP kept. id (correlation id), mid (Message-ID), size (bytes), rcpts (count),
    # sha (sha256 hex of the body), proto ("smtp" | "http"), api (null | "sendgrid" | ...), peer,
    # session, key (AUTH user / API key, may be null), acked (false when the client was cut off
    # after the ESP kept the message: the classic duplicate maker). HTTP (issue 3): esp_id (the
    # message id the API answered with: SendGrid X-Message-Id, SES MessageId, ...); sha/size are of
    # the raw MIME (SES Raw, Mailgun messages.mime) or else of the request body. key is a *name*, never a
    # secret: the AUTH user or credential name, or ``sha256:<12 hex>`` of a key that is a secret
    # (mailstorm.fake_esp.auth). tls: the TLS version of an encrypted SMTP session ("TLSv1.3"), or null.
    ESP_ACCEPTED = "esp.accepted"
    # A reply other than acceptance (or a cut connection) given to a client: proto, phase, code
    # (int, or null for a cut), text, fault (name of the fault that caused it, or null), session,
    # id (when known: at end of data), peer. HTTP: api, code is the HTTP status, phase "http".
    # TLS and AUTH: phase "tls" (a failed handshake: code null, text the reason), "auth" (a 535 carries
    # user: the name of the login tried), "mail" (530 before STARTTLS or AUTH); HTTP may add key (name).
    ESP_REPLIED = "esp.replied"
    # A fault decision that changed something: fault, ftype, phase, action ("delay" | "reply" |
    # "disconnect" | "tarpit" | "hang"), delay_s, session. An outage's start and end on the SMTP
    # listener: phase "listener", action "refuse" | "hang", state "begin" | "end", session null.
    # HTTP (phase "http"): also proto "http" and api.
    ESP_FAULT = "esp.fault"
    # A webhook event posted back to the sender: api, event, id, url, status, attempt, fault.
    # One per event per attempt (issue 3): also esp_id, rcpt, event_id, copy (1: the second post of
    # a duplicate), final (no more attempts), ok, error; attempt 0 + fault "drop": never posted.
    ESP_WEBHOOK = "esp.webhook"

    # -- load generator ---------------------------------------------------------------------------
    # One submission attempt at the SUT: id, intended (ns: when the open model meant to send it),
    # start (ns), end (ns), ok (bool: the SUT accepted it), code (int or null), text, phase (where it
    # failed, or "done"; "stop" when the generator was stopped mid-submission), target (host:port or
    # URL), worker; also cls (message class name), size (bytes), rcpts (recipient count).
    LOAD_SUBMIT = "load.submit"
    # Arrivals the generator could not start in time and did not send (as k6's dropped_iterations):
    # intended (ns), count, worker.
    LOAD_DROPPED = "load.dropped"
    # A load process began its schedule (written once, before its first submission): worker, t0 (ns:
    # the schedule's zero, from which the shape's times count; the first arrival is a little after
    # it), planned (arrivals this process will offer: exact for uniform arrivals, the mean for Poisson;
    # null for the closed model), shape (its kind).
    LOAD_STARTED = "load.started"

    # -- system under test (reference pipeline, or sampled from a real one) -----------------------
    # sut.accepted: id, queue_id. sut.relayed: id, attempt, code. sut.deferred: id, attempt, code,
    # text, retry_in_s. sut.bounced: id, code, text. sut.queue: depth (sampled queue depth).
    # code is null for a connection failure or timeout (no reply). sut.bounced may add attempt (the
    # attempt that bounced), and for a partial bounce (some recipients refused for good, the message
    # still relayed to the others) rcpts (the refused ones) and partial: true.
    SUT_ACCEPTED = "sut.accepted"
    SUT_RELAYED = "sut.relayed"
    SUT_DEFERRED = "sut.deferred"
    SUT_BOUNCED = "sut.bounced"
    SUT_QUEUE = "sut.queue"

    # -- run timeline (the runner) ----------------------------------------------------------------
    # run.started: run_id, name, seed, duration_s. run.ended: reason. run.phase: phase ("load",
    # "drain", "stop"). chaos.begin / chaos.end: name, what, params. probe: url, status, latency_s,
    # ok, value. action: what, target, ok, detail.
    # Additive (runner): run.started's t is the run's zero: the intended time of the load's first
    # arrival (written when the runner sees it, so dated slightly before it is written; absent when the
    # run failed before the load began); its ``prepared`` (ns) is when the runner began starting the
    # parts. run.phase "load" has t0 (ns: the same zero, that chaos steps' at_s count from).
    # chaos.begin / chaos.end have at_s (scheduled time, s from t0); "what" is esp_fault | esp_outage
    # | target | network. probe has name and error (why a poll failed). action has started (ns: when
    # it was issued; t is when it finished); target is the target kind, or "esp" for an ESP crash.
    RUN_STARTED = "run.started"
    RUN_PHASE = "run.phase"
    RUN_ENDED = "run.ended"
    CHAOS_BEGIN = "chaos.begin"
    CHAOS_END = "chaos.end"
    PROBE = "probe"
    ACTION = "action"


class LedgerWriter:
    """Appends records to ``<directory>/<source>.jsonl``; one writer per process and source.

    Thread-safe (a lock around the single write), usable from asyncio (the write is a short
    non-blocking syscall on a local file) and from gevent (no cooperative yield inside).
    """

    def __init__(self, directory: str | os.PathLike[str], source: str, *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.source = source
        self.path = self.directory / f"{source}{LEDGER_SUFFIX}"
        self._fsync = fsync
        self._lock = threading.Lock()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.records_written = 0
        # A restart after a kill mid-write: end the torn line, or our first record would be glued to it
        # and skipped with it.
        with self.path.open("rb") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    os.write(self._fd, b"\n")

    def write(self, kind: str, /, **fields: Any) -> int:
        """Write one record now and return its timestamp (ns). Fields must be JSON-serialisable."""
        t = time.time_ns()
        line = orjson.dumps({"t": t, "k": str(kind), "src": self.source, **fields}) + b"\n"
        with self._lock:
            if self._fd is None:
                raise ValueError(f"ledger {self.path} is closed")
            os.write(self._fd, line)
            if self._fsync:
                os.fsync(self._fd)
            self.records_written += 1
        return t

    def write_records(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records made by another process (each keeps its own t, k and src) in one write: how
        the Locust master gathers the ledger a remote load worker shipped to it."""
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        if not data:
            return
        with self._lock:
            if self._fd is None:
                raise ValueError(f"ledger {self.path} is closed")
            os.write(self._fd, data)
            if self._fsync:
                os.fsync(self._fd)
            self.records_written += data.count(b"\n")

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LedgerReader:
    """Reads and merges every ledger file of one run directory (or one ledger directory)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.torn_lines = 0

    def files(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{LEDGER_SUFFIX}"))

    def iter_file(self, path: Path, kinds: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        wanted = {str(k) for k in kinds} if kinds is not None else None
        # Cheap pre-filter: look for the kind's bytes before paying for a JSON parse.
        needles = [f'"k":"{k}"'.encode() for k in wanted] if wanted is not None else None
        with path.open("rb") as fh:
            for raw in fh:
                if needles is not None and not any(n in raw for n in needles):
                    continue
                try:
                    rec = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    # Only a kill in the middle of a write makes this: the last line a writer process wrote.
                    self.torn_lines += 1
                    continue
                if wanted is None or rec.get("k") in wanted:
                    yield rec

    def records(self, kinds: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every record (of the given kinds), file by file, each file in write order."""
        kinds = list(kinds) if kinds is not None else None
        for path in self.files():
            yield from self.iter_file(path, kinds)

    def merged(self, kinds: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Every record (of the given kinds) from all files, ordered by timestamp."""
        return sorted(self.records(kinds), key=lambda r: r["t"])

    def count(self, kind: str) -> int:
        return sum(1 for _ in self.records([kind]))
