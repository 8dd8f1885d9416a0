"""tls: break the TLS layer, as a misconfigured or failing ESP front end does.

The action kind is the fault's mode; the SMTP session (mailstorm.fake_esp.smtp_tls) and the https
listener carry it out: ``no_starttls`` (EHLO without STARTTLS and STARTTLS answered 454; on an
implicit-TLS port the session stays plain text), ``handshake_failure`` (a fatal handshake_failure
alert instead of the ServerHello), ``expired_cert`` / ``wrong_host`` (the handshake offers that
certificate), ``cut_mid_data`` (the connection cut after the first line of the message, without a TLS
close_notify: a truncation the client must not take for the end of the data).
"""

from __future__ import annotations

import random
from typing import Any

from mailstorm.fake_esp.faults.base import Action, Context, register

NO_STARTTLS = "no_starttls"
HANDSHAKE_FAILURE = "handshake_failure"
EXPIRED_CERT = "expired_cert"
WRONG_HOST = "wrong_host"
CUT_MID_DATA = "cut_mid_data"


@register("tls")
class TlsFault:
    def __init__(self, spec: Any) -> None:
        self.action = Action(spec.mode)

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return self.action
