"""The chaos timeline's model: one ``ChaosStep`` per entry (at, for, name, exactly one of ``esp_fault``,
``esp_outage``, ``target``, ``network``), the ESP outage modes, target actions and the actions a ``for``
undoes at its end (``INVERSE_ACTIONS``). mailstorm.harness.scenario composes them into the scenario;
mailstorm.harness.timeline carries them out."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from mailstorm.durations import Duration
from mailstorm.fake_esp.spec import FaultSpec, Surface
from mailstorm.harness.chaosproxy.spec import ToxicSpec


class Frozen(BaseModel):
    """The scenario's models: immutable once parsed, and no key they do not know."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EspOutage(Frozen):
    """The whole ESP goes away for the step's ``for``: ``refuse`` (connections refused on every port but
    control, open sessions and requests cut, no webhook posted), ``hang`` (connections accepted, never
    answered; no webhook posted), or ``crash`` (the fake ESP process is SIGKILLed and a new one started
    on the same ports at the end: faults added at run time die with it). ``on`` narrows refuse and hang
    to some of the ESP's parts (``smtp``, ``http``, ``webhooks``; default: all)."""

    mode: Literal["refuse", "hang", "crash"] = "refuse"
    on: tuple[Surface, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _narrow_what_can_be(self) -> EspOutage:
        if self.mode == "crash" and self.on is not None:
            raise ValueError(
                "on: a crash takes the whole ESP process down; 'on' narrows refuse and hang only"
            )
        return self


class TargetAction(Frozen):
    """An action on the target (``kill``, ``pause``, ``restart``...; the target kind says which it knows).
    Written as a bare name (``target: kill``) or as ``{action: kill, params: {...}}``."""

    action: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_-]*$")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"action": data} if isinstance(data, str) else data


# In a file: a bare action name, or the full mapping.
TargetActionField = Annotated[
    TargetAction,
    WithJsonSchema(
        {"anyOf": [{"type": "string", "pattern": r"^[a-z][a-z0-9_-]*$"}, TargetAction.model_json_schema()]}
    ),
]

# An action given with ``for`` is undone at the end of the window by its inverse.
INVERSE_ACTIONS: dict[str, str] = {
    "pause": "resume",
    "stop": "start",
    "kill": "restart",
    "disconnect": "connect",
    "sigstop": "sigcont",
}
WHATS: tuple[str, ...] = ("esp_fault", "esp_outage", "target", "network")


class ChaosStep(Frozen):
    """One entry of the timeline: at ``at`` (from the start of the load), for ``for`` (optional: until
    the end of the run), exactly one of ``esp_fault``, ``esp_outage``, ``target``, ``network``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    at: Annotated[Duration, Field(ge=0)]
    for_: Annotated[Duration, Field(gt=0)] | None = Field(default=None, alias="for")
    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    esp: str | None = Field(
        default=None,
        description="the ESP an esp_fault or esp_outage acts on (default: the first), or the ESP whose "
        "paths a network step's toxic acts on (default: every ESP's)",
    )
    esp_fault: FaultSpec | None = None
    esp_outage: EspOutage | None = None
    target: TargetActionField | None = None
    network: ToxicSpec | None = None

    @model_validator(mode="after")
    def _one_thing(self) -> ChaosStep:
        given = [w for w in WHATS if getattr(self, w) is not None]
        if len(given) != 1:
            got = f"got {', '.join(given)}" if given else "got none"
            raise ValueError(f"a step needs exactly one of {', '.join(WHATS)} ({got})")
        if self.esp is not None and self.target is not None:
            raise ValueError(
                "esp: names the ESP an esp_fault, esp_outage or network step acts on; a target step has none"
            )
        if self.esp_outage is not None and self.for_ is None:
            raise ValueError("an esp_outage needs 'for' (how long the ESP is away)")
        if self.target is not None and self.for_ is not None and self.target.action not in INVERSE_ACTIONS:
            undo = ", ".join(sorted(INVERSE_ACTIONS))
            raise ValueError(f"'for' undoes a target action at its end; only these can be undone: {undo}")
        return self

    @property
    def what(self) -> str:
        return next(w for w in WHATS if getattr(self, w) is not None)

    @property
    def end(self) -> float | None:
        return None if self.for_ is None else self.at + self.for_

    def label(self, index: int) -> str:
        """A unique name on the timeline: the given one, else ``<what>-<index>``."""
        return self.name or f"{self.what}-{index}"

    def params(self) -> dict[str, Any]:
        """The step's own settings as JSON, as the timeline ledger records them."""
        value = getattr(self, self.what)
        return value.model_dump(mode="json", exclude_none=True)
