"""The ``campaign:`` section of a scenario: one campaign or a list of them, parsed once (frozen pydantic).

A campaign is a list (``recipients: N`` seeded fake subscribers, or ``list: FILE.csv``), the share that
unsubscribed (``unsubscribed: 2%``, or ``unsubscribed: {column: NAME}`` naming a column of the file), a
time on the timeline (``at``), and a trigger: ``http`` (a request to the SUT), ``command`` (an argv) or
``smtp`` (one message to a list address the SUT expands). ``correlation`` says how the reports follow the
SUT's messages back to the list: by the ``X-Mailstorm-Campaign`` header, or by recipient address alone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator

from mailstorm.durations import Duration

CAMPAIGN_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# What an http trigger's URL, body values and a command's argv may name (substituted when it fires).
PLACEHOLDERS = ("campaign_id", "list_path", "list_url", "target_http", "target_host", "target_port")
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _percent(value: Any) -> Any:
    """``"2%"`` -> 2.0; a bare number is a percentage too; a mapping is left to the column model."""
    if isinstance(value, str):
        m = _PERCENT.match(value)
        if not m:
            raise ValueError(f"{value!r} is not a percentage (write it like '2%')")
        return float(m.group(1))
    return value


class UnsubscribedColumn(_Frozen):
    """The list file's own column says who unsubscribed: a row whose value is one of ``values``."""

    column: str = Field(min_length=1)
    values: tuple[str, ...] = ("unsubscribed", "true", "yes", "1")


Percent = Annotated[
    float,
    Field(ge=0, le=100),
    WithJsonSchema({
        "anyOf": [{"type": "number", "minimum": 0, "maximum": 100},
                  {"type": "string", "pattern": _PERCENT.pattern}],
        "description": "a percentage: '2%' (or 2)",
    }),
]  # fmt: skip
Unsubscribed = Annotated[Percent | UnsubscribedColumn, BeforeValidator(_percent)]


class HttpTrigger(_Frozen):
    """A request to the SUT. The JSON body has ``campaign_id``, ``list_path``, ``list_url``, ``subject``,
    ``from``, plus ``body``'s fields; ``url`` defaults to the target's own ``{target_http}/campaigns``
    (the reference pipeline's)."""

    via: Literal["http"] = "http"
    url: str = "{target_http}/campaigns"
    method: Literal["POST", "PUT", "GET"] = "POST"
    body: dict[str, str | int | float | bool] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0)


class CommandTrigger(_Frozen):
    """An argv run by the runner (no shell); exit 0 means the SUT took the campaign."""

    via: Literal["command"] = "command"
    argv: tuple[str, ...] = Field(min_length=1)
    timeout: float = Field(default=30.0, gt=0)


class SmtpTrigger(_Frozen):
    """One message to ``to`` (the list's address) at the target's SMTP endpoint: the SUT expands it, as a
    list manager does. ``host``/``port`` default to the target's first SMTP endpoint."""

    via: Literal["smtp"] = "smtp"
    to: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    timeout: float = Field(default=10.0, gt=0)


Trigger = Annotated[HttpTrigger | CommandTrigger | SmtpTrigger, Field(discriminator="via")]


class CampaignSpec(_Frozen):
    """One campaign: its list, when it is triggered and how, and how its messages are followed."""

    id: str = Field(pattern=CAMPAIGN_ID)
    recipients: int | None = Field(default=None, ge=1, le=10_000_000, description="seeded fake subscribers")
    list: Path | None = Field(default=None, description="a CSV file with an email column")
    unsubscribed: Unsubscribed | None = None
    at: Annotated[Duration, Field(ge=0)] = Field(
        default=0.0, description="when on the timeline (s from the load's zero); 30, '5s', '2m'"
    )
    trigger: Trigger = Field(default_factory=HttpTrigger)
    subject: str = Field(default="Campaign {campaign_id}", min_length=1, max_length=200)
    from_: str = Field(default="news@mailstorm.test", alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    correlation: Literal["header", "recipient"] = "header"
    seed: int | None = Field(default=None, ge=0, description="the list's seed (default: from the scenario's)")

    @model_validator(mode="after")
    def _one_list(self) -> CampaignSpec:
        if (self.recipients is None) == (self.list is None):
            raise ValueError("a campaign needs exactly one of recipients (a count) or list (a CSV file)")
        if self.recipients is not None and isinstance(self.unsubscribed, UnsubscribedColumn):
            raise ValueError("unsubscribed: a column needs a list file (list:); give a percentage instead")
        return self

    def fields(self, values: dict[str, str]) -> dict[str, str]:
        """The subject and sender with the placeholders filled in."""
        return {"subject": fill(self.subject, values), "from": self.from_}


_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


def fill(text: str, values: dict[str, str]) -> str:
    """``text`` with the campaign placeholders replaced (others are left as written)."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)
