"""An SMTP sink that offers PIPELINING (RFC 2920) and refuses on cue, for the tests (its own process:
``python pipelining_sink.py PORT``).

aiosmtpd reads commands one line at a time, so pipelined commands are answered in order; it only does
not advertise the extension, which the EHLO hook adds. Refusals are keyed on the addresses, so a test
picks them per message: a sender starting with ``refuse`` gets 550 at MAIL, a recipient starting with
``busy`` 450 at RCPT. Accepted messages answer ``250 2.0.0 queued <n> rcpts=<k>``.
"""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.smtp import SMTP


class Handler:
    def __init__(self) -> None:
        self.queued = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if address.startswith("refuse"):
            return "550 5.7.1 Sender refused"
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("busy"):
            return "450 4.2.1 Mailbox busy"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.queued += 1
        return f"250 2.0.0 queued {self.queued} rcpts={len(envelope.rcpt_tos)}"


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Handler()
    server = await loop.create_server(lambda: SMTP(handler, hostname="pipe-sink.test"), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
