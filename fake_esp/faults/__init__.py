"""The faults: one module per fault type, each holding its spec model, its class and its registration
(``mailstorm.fake_esp.faults.base``). Adding a fault is adding a module here: ``FAULTS`` finds it.

``build(spec)`` makes the fault object for a validated spec (mailstorm.fake_esp.spec.FaultSpec).
"""

from __future__ import annotations

from typing import Any

from mailstorm.fake_esp.faults.base import FAULTS, Fault, register

__all__ = ["FAULTS", "Fault", "build", "register"]


def build(spec: Any) -> Fault:
    return FAULTS[spec.type](spec)
