"""The ``analytics:`` section of a scenario (docs/scenarios.md#analytics):

    analytics:
      receiver: target          # the ESP posts its webhooks to the target's receiver (reference: POST
                                # /webhooks/<format>); esp.webhooks.url is then left out
      probe:                    # how the SUT's counts are read, polled every ``every`` and after the drain
        url: target             # or http://...; target: the target's own (reference: GET /analytics)
        format: json            # json: an object {event: count} (``json``: a dotted path to it) |
                                # prometheus: ``metric``'s samples summed per ``label`` value
        every: 0.5s

With ``receiver: target`` the ESP posts in one format, its ``esp.webhooks.format`` or else its profile's
(filled in here, so the URL can name it).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mailstorm.durations import Duration
from mailstorm.errors import FieldError

# esp.webhooks.url with ``receiver: target``: the run replaces it with the target's receiver at start.
RECEIVER_PLACEHOLDER = "http://127.0.0.1/webhooks/target"


class AnalyticsProbeSpec(BaseModel):
    """The SUT's analytics counts, polled during the run and once after the drain."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    url: str = Field(
        "target",
        pattern=r"^(target|https?://[^/\s]+.*)$",
        description="the SUT's counts URL, or 'target': the target's own (the reference's GET /analytics)",
    )
    format: Literal["json", "prometheus"] = "json"
    json_path: str | None = Field(
        None, alias="json", min_length=1, description="json: dotted path to the {event: count} object"
    )
    metric: str | None = Field(
        None, pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$", description="prometheus: the counter of events"
    )
    label: str = Field("event", min_length=1, description="prometheus: the label naming the event kind")
    every: Annotated[Duration, Field(gt=0)] = 0.5
    timeout: Annotated[Duration, Field(gt=0)] = 1.0

    @model_validator(mode="after")
    def _format_fields(self) -> AnalyticsProbeSpec:
        if self.format == "prometheus" and self.metric is None:
            raise ValueError("format: prometheus needs metric (the counter of events, e.g. webhook_events)")
        if self.format == "json" and self.metric is not None:
            raise ValueError("metric is for format: prometheus (json reads an object, path in json:)")
        return self


class AnalyticsSpec(BaseModel):
    """Where the ESP's webhooks go and how the SUT's counts of them are read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    receiver: Literal["target"] | None = Field(
        None, description="target: the ESP posts its webhooks to the target's receiver"
    )
    probe: AnalyticsProbeSpec | None = None


def fill_receiver(data: dict[str, Any]) -> dict[str, Any]:
    """With ``analytics.receiver: target``: the first ESP's webhooks get the placeholder URL and a
    format (its profile's when unset). Errors name the field."""
    analytics = data.get("analytics")
    if not (isinstance(analytics, dict) and analytics.get("receiver") == "target"):
        return data
    key = "esps" if isinstance(data.get("esps"), list) else "esp"
    esps = data.get(key) if key == "esps" else [data.get("esp")]
    esp = esps[0] if esps and isinstance(esps[0], dict) else None
    where = (key, 0, "webhooks") if key == "esps" else ("esp", "webhooks")
    if esp is None or not isinstance(esp.get("webhooks"), dict):
        raise FieldError(
            where, "analytics.receiver: target needs the ESP's webhooks section (events, retries)"
        )
    hooks = dict(esp["webhooks"])
    if hooks.get("url", RECEIVER_PLACEHOLDER) != RECEIVER_PLACEHOLDER:
        raise FieldError(
            (*where, "url"), "leave it out with analytics.receiver: target (the run points it there)"
        )
    hooks["url"] = RECEIVER_PLACEHOLDER
    if not hooks.get("format"):
        from mailstorm.fake_esp.profiles import PROFILE_NAMES, load_profile
        from mailstorm.fake_esp.webhooks import WEBHOOK_FORMATS

        profile = esp.get("profile")
        api = load_profile(profile).api if profile in PROFILE_NAMES else None
        if api is None or WEBHOOK_FORMATS.get(api) is None:
            raise FieldError(
                (*where, "format"), "set it (or an esp.profile with webhooks): the receiver's format"
            )
        hooks["format"] = api
    esp = {**esp, "webhooks": hooks}
    if key == "esps":
        return {**data, "esps": [esp, *esps[1:]]}
    return {**data, "esp": esp}


def schema_url_optional(schema: dict[str, Any]) -> None:
    """In the scenario's JSON Schema, ``esp.webhooks.url`` may be left out (``receiver: target``)."""
    hooks = schema.get("$defs", {}).get("WebhookSpec")
    if hooks is not None:
        hooks["required"] = [r for r in hooks.get("required", []) if r != "url"]
        url = hooks.get("properties", {}).get("url")
        if url is not None:
            url["description"] = "where to POST; left out with analytics.receiver: target"
