"""Postfix's side of the ledger: follows a throwaway instance's maillog and writes ``sut.*`` records.

Postfix keeps no ledger, but it logs every step: with a ``header_checks`` rule that logs the correlation
header (``INFO``), the cleanup daemon ties each queue id to its ``X-Mailstorm-Id``, and every delivery
attempt is a ``status=sent|deferred|bounced`` line for that queue id. So a message still queued when the
run's drain deadline passes is known to be held (``sut.deferred``: pending, not lost), and the reports
see Postfix's attempts and the ESP replies it got, as they do for the reference pipeline.

Records (source ``postfix``, written when the line is read, within ``POLL_S`` of Postfix logging it):
``sut.accepted`` {id, queue_id}; ``sut.relayed`` {id, queue_id, attempt, code}; ``sut.deferred`` {id,
queue_id, attempt, code (null: no SMTP reply, e.g. connection refused), text, retry_in_s (null: Postfix
decides)}; ``sut.bounced`` {id, queue_id, code, text}.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from mailstorm.ledger import (
    CORRELATION_HEADER,
    LedgerWriter,
    SutAccepted,
    SutBounced,
    SutDeferred,
    SutRelayed,
)

POLL_S = 0.2
INFO_TAG = "mailstorm-id="
# The header_checks rule (regexp table): log the correlation id of every message as it is enqueued.
HEADER_CHECK = f"/^{CORRELATION_HEADER}:[[:space:]]*([^[:space:]]+)/ INFO {INFO_TAG}$1\n"

_QUEUE_ID = r"(?P<qid>[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,})"
_INFO = re.compile(_QUEUE_ID + r": info: header .*: " + re.escape(INFO_TAG) + r"(?P<id>\S+)\s*$")
_STATUS = re.compile(
    _QUEUE_ID + r": to=<[^>]*>,.* status=(?P<status>sent|deferred|bounced) \((?P<text>.*)\)$"
)
_REPLY_CODE = re.compile(r"said: (\d{3})[ -]")
_SENT_CODE = re.compile(r"^(\d{3})[ -]")


def correlation_ids(maillog: Path) -> dict[str, str]:
    """Queue id -> correlation id from every header_checks line of ``maillog`` (empty when it is absent)."""
    try:
        with maillog.open(errors="replace") as fh:
            return {m["qid"]: m["id"] for line in fh if (m := _INFO.search(line))}
    except FileNotFoundError:
        return {}


class MaillogFollower:
    """A thread tailing ``maillog`` into ``writer`` until ``stop()`` (which reads what is left first)."""

    def __init__(self, maillog: Path, writer: LedgerWriter) -> None:
        self.maillog = maillog
        self._writer = writer
        self._ids: dict[str, str] = {}  # queue id -> correlation id
        self._attempts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="postfix-maillog", daemon=True)
        self.lines = 0

    def start(self) -> MaillogFollower:
        self._thread.start()
        return self

    def ids(self) -> dict[str, str]:
        """Queue id -> correlation id of every message enqueued so far (a copy: the thread adds to it)."""
        return self._ids.copy()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        offset, partial = 0, b""
        while True:
            stopping = self._stop.is_set()
            try:
                with self.maillog.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            *lines, partial = (partial + chunk).split(b"\n")
            for raw in lines:
                self.feed(raw.decode("utf-8", "replace"))
            if stopping:
                return
            self._stop.wait(POLL_S)

    def feed(self, line: str) -> None:
        """Turn one maillog line into a ledger record, when it is one of ours."""
        self.lines += 1
        if m := _INFO.search(line):
            qid, cid = m["qid"], m["id"]
            self._ids[qid] = cid
            self._writer.write(SutAccepted(id=cid, queue_id=qid))
            return
        m = _STATUS.search(line)
        if m is None or m["qid"] not in self._ids:
            return
        qid, status, text = m["qid"], m["status"], m["text"]
        cid = self._ids[qid]
        attempt = self._attempts[qid] = self._attempts.get(qid, 0) + 1
        said = _REPLY_CODE.search(text)
        if status == "sent":
            sent = _SENT_CODE.match(text)
            code = int(sent[1]) if sent else 250
            self._writer.write(SutRelayed(id=cid, queue_id=qid, attempt=attempt, code=code))
        elif status == "deferred":
            code = int(said[1]) if said else None
            self._writer.write(
                SutDeferred(id=cid, queue_id=qid, attempt=attempt, code=code, text=text, retry_in_s=None)
            )
        else:
            code = int(said[1]) if said else None
            self._writer.write(SutBounced(id=cid, queue_id=qid, code=code, text=text))
