"""A STARTTLS-only SMTP sink for the tests (run as ``python tls_sink.py PORT CERT KEY``, its own process).

aiosmtpd with a TLS context and ``require_starttls``: MAIL before STARTTLS is refused (530), AUTH is
offered only over TLS, and a message is accepted only from a session that is both encrypted and
authenticated, so a client that skipped either step cannot pass.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult


class Handler:
    async def handle_DATA(self, server, session, envelope):
        if session.ssl is None or not session.authenticated:
            return "530 5.7.0 Must issue a STARTTLS command and authenticate first"
        return "250 2.0.0 OK tls+auth"


def _auth(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"loaduser" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


async def main(port: int, cert: str, key: str) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(
            Handler(),
            hostname="tls-sink.test",
            tls_context=ctx,
            require_starttls=True,
            auth_require_tls=True,
            authenticator=_auth,
        ),
        "127.0.0.1",
        port,
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
