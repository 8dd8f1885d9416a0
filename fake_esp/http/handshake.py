"""TLS faults on the https listener: at each handshake the engine is asked the phase ``tls``, as the SMTP
listener asks it at STARTTLS, so one tls fault breaks both listeners' handshakes.

The server context's SNI callback runs inside the handshake, once the ClientHello is read (OpenSSL calls
it with no server name too, for a client that sends none, as one connecting to 127.0.0.1): it may swap in
the expired or wrong-host certificate (``expired_cert``, ``wrong_host``) or abort the handshake with a
fatal handshake_failure alert (``handshake_failure``, ``no_starttls``: an https port cannot fall back to
plain text, and ``disconnect``). Each fault that acted is an ``esp.fault`` record (proto ``http``, phase
``tls``); an aborted handshake is an ``esp.replied`` cut. Other actions (latency, replies) do not apply
to a handshake and are ignored here.
"""

from __future__ import annotations

import itertools
import os
import ssl
from typing import Any

from mailstorm.fake_esp.engine import Engine
from mailstorm.fake_esp.faults.base import DISCONNECT, PASS_ACTION, Context
from mailstorm.fake_esp.faults.tls import EXPIRED_CERT, HANDSHAKE_FAILURE, NO_STARTTLS, WRONG_HOST
from mailstorm.fake_esp.tls import Contexts
from mailstorm.ledger import EspFault, EspReplied, LedgerWriter

_ABORT = frozenset({HANDSHAKE_FAILURE, NO_STARTTLS, DISCONNECT})


def https_context(
    tls: Contexts, engine: Engine, ledger: LedgerWriter, counters: Any = None
) -> ssl.SSLContext:
    """``tls.https`` with the SNI callback that lets the engine's tls faults act on each handshake."""
    seq = itertools.count(1)
    prefix = f"t{os.getpid()}-"

    def on_hello(ssl_object: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        session = f"{prefix}{next(seq)}"
        act = engine.decide("tls", Context(phase="tls", session=session, extra={"proto": "http"}))
        if act is PASS_ACTION:
            return None
        for f in act.fired:
            ledger.write(
                EspFault(
                    fault=f.fault,
                    ftype=f.ftype,
                    phase="tls",
                    action=f.action,
                    delay_s=f.delay_s,
                    session=session,
                    proto="http",
                )
            )
        if act.kind == EXPIRED_CERT:
            ssl_object.context = tls.expired
        elif act.kind == WRONG_HOST:
            ssl_object.context = tls.wrong_host
        elif act.kind in _ABORT:
            ledger.write(
                EspReplied(
                    proto="http",
                    phase="tls",
                    code=None,
                    text=f"{act.kind}: handshake aborted",
                    fault=act.fault,
                    session=session,
                    id=None,
                    peer="",
                )
            )
            if counters is not None:
                counters.cut += 1
            return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE
        return None

    tls.https.sni_callback = on_hello
    return tls.https
