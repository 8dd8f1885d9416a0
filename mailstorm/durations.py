"""Durations as scenario files write them: seconds, or a string with units (``90``, ``"1.5s"``,
``"500ms"``, ``"2m"``, ``"1h"``, ``"1m30s"``), parsed once into float seconds by the ``Duration`` type."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)")
_DURATION_FULL = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|min|m|h)\s*)+$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*(ms|s|min|m|h)\s*)+$"


def parse_duration(value: Any) -> Any:
    """``90`` / ``"90s"`` / ``"1m30s"`` / ``"500ms"`` -> seconds; anything else is left to pydantic."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30s', '2m', '500ms'")
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return float(text)
        except ValueError:
            pass
        if not _DURATION_FULL.match(text):
            raise ValueError(f"{value!r} is not a duration (use seconds or a unit: 500ms, 30s, 2m, 1h)")
        return sum(float(n) * _UNIT_S[u] for n, u in _DURATION_PART.findall(text))
    return value


_DURATION_SCHEMA = {
    "anyOf": [{"type": "number", "minimum": 0}, {"type": "string", "pattern": DURATION_PATTERN}],
    "description": "seconds, or a string with a unit: 500ms, 30s, 2m, 1h",
}
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(_DURATION_SCHEMA)]


def fmt_s(seconds: float) -> str:
    return f"{seconds:g}s"
