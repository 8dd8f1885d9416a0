"""A scenario's ``alerts:`` section, parsed once (``AlertsSpec``).

Two ways to use it: ``start: true`` (the default) starts a real Prometheus loading the ``rules`` file and
a real Alertmanager posting to mailstorm's receiver; ``start: false`` runs the receiver alone, for the
user's own Alertmanager pointed at it (its URL is in run.json and said at the start). How alerts are
matched to fault windows (``map``, ``grace``) is the reports' half (mailstorm.reports.spec.AlertMatchSpec).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, model_validator

from mailstorm.durations import Duration
from mailstorm.reports.spec import AlertMatchSpec


class AlertsSpec(AlertMatchSpec):
    rules: Path | None = Field(
        None, description="Prometheus alerting rules file (relative: to the scenario file's folder)"
    )
    start: bool = Field(True, description="start Prometheus and Alertmanager; false: only the receiver")
    scrape_interval: Annotated[Duration, Field(ge=0.1, le=60)] = 1.0
    evaluation_interval: Annotated[Duration, Field(ge=0.1, le=60)] = 1.0
    resolve_wait: Annotated[Duration, Field(ge=0, le=600)] = Field(
        10.0,
        description="after the drain, wait up to this long for alerts still firing to resolve (those "
        "named in map, when it is given), so the last fault's time to resolve is measured",
    )
    receiver_port: int | None = Field(
        None, ge=1, le=65535, description="the webhook receiver's port (unset: a free one)"
    )

    @model_validator(mode="after")
    def _rules_when_started(self) -> AlertsSpec:
        if self.start and self.rules is None:
            raise ValueError("rules: a rules file is needed to start Prometheus (or set start: false)")
        return self
