"""The toxic spec as one discriminated union on ``type`` (built from the registry), parsed once at the edge.

Scenario files and the control API both hand toxics over as flat dicts, e.g.
``{type: latency, ms: 50, jitter_ms: 5, stream: downstream}``; ``parse_toxic`` turns one into its frozen
spec model or raises ConfigError naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from mailstorm.errors import ConfigError
from mailstorm.harness.chaosproxy.base import TOXICS, ToxicSpecBase

ToxicSpec = Annotated[
    Union[tuple(cls.spec_model for cls in TOXICS.values())],  # noqa: UP007  (a runtime-built union)
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(ToxicSpec)


def parse_toxic(raw: dict[str, Any] | ToxicSpecBase) -> ToxicSpecBase:
    """Validate one toxic spec; ConfigError names the offending field on bad input."""
    if isinstance(raw, ToxicSpecBase):
        return raw
    if not isinstance(raw, dict) or "type" not in raw:
        raise ConfigError(f"toxic must be a mapping with a 'type' (one of {', '.join(TOXICS.names())})")
    if raw["type"] not in TOXICS:
        raise ConfigError(f"toxic type {raw['type']!r} unknown; known: {', '.join(TOXICS.names())}")
    try:
        return _ADAPTER.validate_python(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"][1:]) or "toxic"
        raise ConfigError(f"toxic {raw['type']}: {where}: {err['msg']}") from None


def build_toxic(spec: ToxicSpecBase):
    """The toxic object for a validated spec."""
    return TOXICS[spec.type](spec)
