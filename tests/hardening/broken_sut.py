"""A known-broken relay, run as a ``process`` target: the truth test's system under test.

    python -m tests.hardening.broken_sut --listen HOST:PORT --relay HOST:PORT --ledger DIR \\
        --drop 3,17 --dup 5,30 --hold 10 [--rewrite]

It accepts every message (250 after DATA) and numbers them in arrival order from 1. Message n is then
dropped (never relayed) when n is in ``--drop``, relayed twice when in ``--dup``, held for good (a
``sut.deferred`` record, never relayed: still queued at any deadline) when in ``--hold``, and relayed once
otherwise. It writes ``sut.accepted`` (queue_id = n), ``sut.relayed`` and ``sut.deferred`` records, as an
honest pipeline would; mailstorm must find exactly these losses, duplicates and pending messages. With
``--rewrite`` it relays every message rebuilt, as template-based pipelines do: the X-Mailstorm-Id header
stripped and the Message-ID replaced by one of its own (the envelope and the body kept).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import smtplib

from aiosmtpd.smtp import SMTP

from mailstorm import replies
from mailstorm.harness.reference.inbound import correlation_id
from mailstorm.ledger import CORRELATION_HEADER, LedgerWriter, SutAccepted, SutDeferred, SutRelayed


def numbers(text: str) -> set[int]:
    return {int(x) for x in text.split(",") if x.strip()}


class BrokenRelay:
    """aiosmtpd handler: accept, then drop / duplicate / hold / relay by arrival number."""

    def __init__(self, args: argparse.Namespace, ledger: LedgerWriter) -> None:
        self.relay_host, _, port = args.relay.rpartition(":")
        self.relay_port = int(port)
        self.drop, self.dup, self.hold = numbers(args.drop), numbers(args.dup), numbers(args.hold)
        self.rewrite = args.rewrite
        self.ledger = ledger
        self.arrivals = 0

    def _relay(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
        with smtplib.SMTP(self.relay_host, self.relay_port, timeout=10) as s:
            s.sendmail(mail_from, rcpts, data)

    async def handle_DATA(self, server, session, envelope) -> str:
        self.arrivals += 1
        n = self.arrivals
        data = envelope.original_content
        cid = correlation_id(data)
        self.ledger.write(SutAccepted(id=cid, queue_id=n))
        if self.rewrite:
            data = rebuilt(data, n)
        if n in self.hold:
            self.ledger.write(SutDeferred(id=cid, attempt=1, code=None, text="held", retry_in_s=1e9))
        elif n not in self.drop:
            for attempt in range(1, 3 if n in self.dup else 2):
                await asyncio.to_thread(self._relay, envelope.mail_from, list(envelope.rcpt_tos), data)
                self.ledger.write(SutRelayed(id=cid, attempt=attempt, code=250))
        return str(replies.OK_QUEUED)


def rebuilt(data: bytes, n: int) -> bytes:
    """The message without its correlation header and with a Message-ID of this relay's own."""
    head, sep, body = data.partition(b"\r\n\r\n")
    keep = [
        line
        for line in head.split(b"\r\n")
        if not line.lower().startswith((CORRELATION_HEADER.lower().encode() + b":", b"message-id:"))
    ]
    keep.append(f"Message-ID: <rebuilt-{n}@broken.test>".encode())
    return b"\r\n".join(keep) + sep + body


async def serve(args: argparse.Namespace) -> None:
    host, _, port = args.listen.rpartition(":")
    ledger = LedgerWriter(args.ledger, "sut-broken")
    handler = BrokenRelay(args, ledger)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(lambda: SMTP(handler, decode_data=False), host, int(port))
    await stop.wait()
    server.close()
    ledger.close()


def main() -> None:
    p = argparse.ArgumentParser(prog="broken_sut")
    p.add_argument("--listen", required=True)
    p.add_argument("--relay", required=True)
    p.add_argument("--ledger", required=True)
    p.add_argument("--drop", default="")
    p.add_argument("--dup", default="")
    p.add_argument("--hold", default="")
    p.add_argument("--rewrite", action="store_true")
    asyncio.run(serve(p.parse_args()))


if __name__ == "__main__":
    main()
