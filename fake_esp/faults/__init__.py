"""The faults: one module per fault type, each registering its class under the spec's ``type``.

``build(spec)`` makes the fault object for a validated spec (mailstorm.fake_esp.spec.FaultSpec).
"""

from __future__ import annotations

from typing import Any

from mailstorm.fake_esp.faults import (  # noqa: F401 - imported for their @register side effect
    concurrency,
    disconnect,
    greylist,
    latency,
    message_cap,
    outage,
    reply,
    tarpit,
    throttle,
    tls,
)
from mailstorm.fake_esp.faults.base import REGISTRY, Fault


def build(spec: Any) -> Fault:
    return REGISTRY[spec.type](spec)
