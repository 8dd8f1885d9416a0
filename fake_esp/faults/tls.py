"""tls: break the TLS layer, as a misconfigured or failing ESP front end does.

The action kind is the fault's mode; the SMTP session (mailstorm.fake_esp.smtp_secure) and the https
listener (mailstorm.fake_esp.http.handshake) carry it out: ``no_starttls`` (EHLO without STARTTLS and
STARTTLS answered 454; on an implicit-TLS port the session stays plain text), ``handshake_failure`` (a
fatal handshake_failure alert instead of the ServerHello), ``expired_cert`` / ``wrong_host`` (the
handshake offers that certificate, signed by the CA), ``cut_mid_data`` (the connection cut after the
first line of the message, without a TLS close_notify: a truncation the client must not take for the end
of the data).

Spec: mode; phase: by default every phase the mode can act at (``TLS_FAULT_PHASES``): ehlo+tls, tls,
tls, tls, data.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import model_validator

from mailstorm.fake_esp.faults.base import Action, Context, FaultBase, FaultSpecBase, Phase, register

NO_STARTTLS = "no_starttls"
HANDSHAKE_FAILURE = "handshake_failure"
EXPIRED_CERT = "expired_cert"
WRONG_HOST = "wrong_host"
CUT_MID_DATA = "cut_mid_data"

# Where each TLS fault can act (its default phase is all of them).
TLS_FAULT_PHASES: dict[str, tuple[str, ...]] = {
    NO_STARTTLS: ("ehlo", "tls"),
    HANDSHAKE_FAILURE: ("tls",),
    EXPIRED_CERT: ("tls",),
    WRONG_HOST: ("tls",),
    CUT_MID_DATA: ("data",),
}


class TlsFault(FaultSpecBase):
    type: Literal["tls"]
    mode: Literal["no_starttls", "handshake_failure", "expired_cert", "wrong_host", "cut_mid_data"]
    phase: Phase | tuple[Phase, ...] = "tls"

    @model_validator(mode="before")
    @classmethod
    def _default_phase(cls, data: Any) -> Any:
        if isinstance(data, dict) and "phase" not in data and data.get("mode") in TLS_FAULT_PHASES:
            return {**data, "phase": TLS_FAULT_PHASES[data["mode"]]}
        return data

    @model_validator(mode="after")
    def _phase_fits_mode(self) -> TlsFault:
        allowed = TLS_FAULT_PHASES[self.mode]
        if not self.phases <= set(allowed):
            raise ValueError(f"phase: a tls fault of mode {self.mode} acts at {' or '.join(allowed)}")
        return self


@register
class Tls(FaultBase):
    spec_model = TlsFault

    def __init__(self, spec: TlsFault) -> None:
        super().__init__(spec)
        self.action = Action(spec.mode)

    def apply(self, ctx: Context, state: dict[str, Any], rng: random.Random, now: float) -> Action:
        return self.action
