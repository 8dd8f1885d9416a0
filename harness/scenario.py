"""The scenario: one YAML file parsed once into a frozen ``Scenario`` that every part of a run reads.

The model composes the other packages' own specs (``mailstorm.fake_esp.spec.EspSpec`` and ``FaultSpec``,
``mailstorm.scenarios.model.LoadSpec``, ``mailstorm.reports.spec.SloSpec`` and ``ReportSpec``, the chaos
proxy's
``ToxicSpec``) with what only a run has: the target (a discriminated union on ``kind`` built from the
target registry's ``spec_model``s, so a new target kind needs no edit here), the chaos timeline and the
probes. ``load_scenario`` is the one entry point: YAML (with line numbers) -> overrides -> validation ->
cross-checks; every failure is one ``ConfigError`` line naming file, line and field.

Conventions a scenario file follows (docs/scenarios.md is the reference):
- durations are seconds or strings with a unit: ``90``, ``"1.5s"``, ``"500ms"``, ``"2m"``, ``"1h"``;
- ``duration`` is the load phase; ``load.duration_s`` is filled from it (never given twice);
- ESP ports unset are chosen free (http_port: 0 too); a number fixes them (an external SUT relays there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from mailstorm.correlation import Correlation
from mailstorm.durations import Duration, fmt_s, parse_duration
from mailstorm.errors import ConfigError, FieldError
from mailstorm.fake_esp.spec import ESP_NAME_PATTERN, EspSpec
from mailstorm.harness.alerts.spec import AlertsSpec
from mailstorm.harness.analytics.spec import AnalyticsSpec, fill_receiver, schema_url_optional
from mailstorm.harness.campaign.spec import CampaignSpec
from mailstorm.harness.chaos_spec import ChaosStep, Frozen
from mailstorm.harness.targets.base import TARGETS
from mailstorm.reports.spec import ReportSpec, SloSpec
from mailstorm.scenarios.model import LoadSpec
from mailstorm.yamlload import Document, load_yaml, parse_yaml

# -- targets: one model per registered kind, discriminated on ``kind`` ---------------------------------

TARGET_KINDS: tuple[str, ...] = TARGETS.names()
TargetSpec = Annotated[
    Union[tuple(TARGETS[k].spec_model for k in TARGET_KINDS)],  # noqa: UP007  (a runtime-built union)
    Field(discriminator="kind"),
]
DEFAULT_TARGET: dict[str, Any] = {"kind": "reference"}


# -- probes -----------------------------------------------------------------------------------------


class ProbeSpec(Frozen):
    """An HTTP URL of the SUT's own monitoring, polled every ``every`` and written on the timeline.

    ``url`` names it; or ``target: health`` / ``target: metrics`` asks for the target's own URLs (known
    only once it runs, on free ports: the reference pipeline has both). ``metric`` records the value of
    a Prometheus metric in the response (summed over its labels); ``json`` records a field of a JSON
    response by dotted path (``queue.depth``).
    """

    url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")
    target: Literal["health", "metrics"] | None = None
    name: str | None = Field(default=None, min_length=1, max_length=100)
    every: Annotated[Duration, Field(gt=0)] = 1.0
    timeout: Annotated[Duration, Field(gt=0)] = 1.0
    metric: str | None = Field(default=None, pattern=r"^[A-Za-z_:][A-Za-z0-9_:]*$")
    json_path: str | None = Field(default=None, alias="json", min_length=1)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_value(self) -> ProbeSpec:
        if (self.url is None) == (self.target is None):
            raise ValueError("a probe needs exactly one of url, target (health or metrics)")
        if self.metric is not None and self.json_path is not None:
            raise ValueError("give metric or json, not both")
        return self


# -- the ESP ----------------------------------------------------------------------------------------


class EspSection(EspSpec):
    """The ``esp:`` section: the fake ESP's own spec, plus ``rate`` (messages/s: the sending quota that
    overrides the profile's, as ``mailstorm esp --rate``). Unlike a standalone fake ESP, whose ports
    default to 2525/8025, a run picks free ones unless the file fixes them (two runs never collide).
    ``tls``/``require_tls``/``auth`` are the ESP's (as ``mailstorm esp``); the CA goes to
    ``<run>/esp/ca.pem`` and the targets configure their SUT with it and the first credential."""

    smtp_port: int | None = Field(default=None, ge=1, le=65535, description="unset: a free port")
    control_port: int | None = Field(default=None, ge=1, le=65535, description="unset: a free port")
    rate: float | None = Field(default=None, gt=0, description="messages/s quota; overrides the profile's")
    # A fleet of hosts (mailstorm.harness.esp_hosts): the runner starts no fake ESP of its own; one joins
    # from each of these addresses (``mailstorm esp --join``) and they serve the ESP together.
    hosts: tuple[str, ...] = Field(
        default=(), description="addresses of hosts whose fake ESPs join the run (mailstorm esp --join)"
    )
    join_listen: str = Field(
        default="127.0.0.1:0",
        pattern=r"^\[?[0-9A-Za-z.:-]+\]?:\d{1,5}$",
        description="HOST:PORT where the runner takes the hosts' joins and ledgers (port 0: a free one)",
    )
    join_timeout: Annotated[Duration, Field(gt=0, le=3600)] = Field(
        default=120.0, description="how long the runner waits for every host to join"
    )

    @model_validator(mode="after")
    def _hosts_fit(self) -> EspSection:
        if len(set(self.hosts)) != len(self.hosts):
            raise ValueError("hosts: an address is listed twice (one fake ESP joins from each)")
        if self.hosts and self.tls_on:
            raise ValueError(
                "hosts: a fleet of hosts serves plain SMTP and http for now (each host would make its own "
                "CA); set tls: off"
            )
        return self

    @property
    def label(self) -> str:
        """Its name on the timeline (``esp:`` of a step): the given one, else ``esp``."""
        return self.name or "esp"


class NamedEsp(EspSection):
    """One entry of ``esps:`` (several ESPs in one run): an ``esp:`` section with a name of its own,
    which timeline steps use (``esp: secondary``) and its ledger files carry (``esp-<name>-smtp-N``)."""

    name: str = Field(pattern=ESP_NAME_PATTERN, max_length=32)


# Ports an ESP fixes in the file; two ESPs of one run on one port would fail to start (or, with
# SO_REUSEPORT workers, share it silently).
_ESP_PORTS = ("smtp_port", "http_port", "control_port")


# -- the scenario -----------------------------------------------------------------------------------


class Scenario(Frozen):
    """A whole run, as the file describes it."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seed: int = Field(default=0, ge=0, lt=2**63)
    duration: Annotated[Duration, Field(gt=0, le=7 * 86400)]
    drain_deadline: Annotated[Duration, Field(ge=0, le=86400)] = 60.0
    allow_remote: bool = False
    target: TargetSpec = Field(default_factory=lambda: TARGETS["reference"].spec_model(**DEFAULT_TARGET))
    esp: EspSection = Field(default_factory=EspSection)
    esps: tuple[NamedEsp, ...] | None = Field(
        default=None, min_length=1, description="several ESPs, each its own fake ESP (instead of esp)"
    )
    load: LoadSpec | None = None
    campaign: tuple[CampaignSpec, ...] = ()
    chaos: tuple[ChaosStep, ...] = ()
    probes: tuple[ProbeSpec, ...] = ()
    slo: SloSpec = Field(default_factory=SloSpec)
    reports: ReportSpec = Field(default_factory=ReportSpec)
    alerts: AlertsSpec | None = None
    analytics: AnalyticsSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill(cls, data: Any) -> Any:
        """The load runs for the scenario's duration; the fake ESP reads the id where the load puts it."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if isinstance(data.get("campaign"), dict):  # one campaign, or a list of them
            data["campaign"] = [data["campaign"]]
        if isinstance(data.get("load"), dict) and "duration" in data:
            try:
                seconds = parse_duration(data["duration"])
            except ValueError:
                seconds = None  # the top-level field reports it
            if isinstance(seconds, int | float) and seconds > 0:
                data["load"] = {**data["load"], "duration_s": seconds}
        if "esps" in data and "esp" in data:
            raise FieldError(("esps",), "give esp (one ESP) or esps (several), not both")
        load = data.get("load")
        # Only a valid carrier is copied: a bad one is the load's to report, on the load's line.
        if isinstance(load, dict) and load.get("correlation") in get_args(Correlation):
            carrier = {"correlation": load["correlation"]}
            if isinstance(data.get("esp", {}), dict):
                data["esp"] = {**data.get("esp", {}), **carrier}
            if isinstance(data.get("esps"), list):
                data["esps"] = [{**e, **carrier} if isinstance(e, dict) else e for e in data["esps"]]
        return fill_receiver(_smtp_target_options_to_load(_esp_steps_name_their_esp(data)))

    @property
    def fleet(self) -> tuple[EspSection, ...]:
        """Every ESP of the run in the file's order, the first being the SUT's primary relay: ``esps``,
        or the one ``esp`` (a list of one)."""
        return self.esps if self.esps is not None else (self.esp,)

    def esp_named(self, name: str | None) -> EspSection:
        """The ESP a timeline step names (None: the first)."""
        return next(e for e in self.fleet if name is None or e.label == name)

    @model_validator(mode="after")
    def _fleet_fits(self) -> Scenario:
        """Names unique, no port fixed twice, and the SUT speaks to every ESP the same way."""
        if self.esps is None:
            return self
        names: dict[str, int] = {}
        ports: dict[int, str] = {}
        first = self.esps[0]
        for j, esp in enumerate(self.esps):
            if esp.name in names:
                raise FieldError(
                    ("esps", j, "name"), f"name {esp.name!r} is used twice (also esps[{names[esp.name]}])"
                )
            names[esp.name] = j
            if esp.hosts:
                raise FieldError(("esps", j, "hosts"), "a fleet of hosts serves the one ESP of esp: only")
            for field in _ESP_PORTS:
                port = getattr(esp, field)
                if not port:
                    continue
                if port in ports:
                    raise FieldError(
                        ("esps", j, field), f"port {port} is also {ports[port]}: one port per ESP listener"
                    )
                ports[port] = f"esps[{j}].{field}"
            # One relay setting in the SUT for all of them (a CA bundle covers every ESP's CA).
            if esp.tls != first.tls:
                raise FieldError(
                    ("esps", j, "tls"),
                    f"{esp.tls}, but esps[0] has {first.tls}: the SUT relays to every ESP with one TLS mode",
                )
            if [(c.user, c.password) for c in esp.auth[:1]] != [(c.user, c.password) for c in first.auth[:1]]:
                raise FieldError(
                    ("esps", j, "auth"),
                    "the SUT logs in to every ESP with one credential: give each esps[0]'s first one",
                )
        return self

    @model_validator(mode="after")
    def _hosts_fit(self) -> Scenario:
        """What a fleet of hosts cannot do: the runner reaches their fake ESPs only by the control API."""
        if not self.esp.hosts:
            return self
        for i, step in enumerate(self.chaos):
            if step.network is not None:
                msg = "the chaos proxy fronts a fake ESP the runner starts; this run's ESP is on esp.hosts"
                raise FieldError(("chaos", i, "network"), msg)
            if step.esp_outage is not None and step.esp_outage.mode == "crash":
                msg = "a crash kills a fake ESP the runner started; with esp.hosts use mode refuse or hang"
                raise FieldError(("chaos", i, "esp_outage", "mode"), msg)
        if self.alerts is not None:
            raise FieldError(("alerts",), "Prometheus scrapes a fake ESP the runner starts, not esp.hosts")
        return self

    @model_validator(mode="after")
    def _campaigns_fit(self) -> Scenario:
        """Something sends: a load, a campaign or both; each campaign once, triggered during the load."""
        if self.load is None and not self.campaign:
            raise FieldError(("load",), "a scenario needs a load: section, a campaign: section, or both")
        seen: set[str] = set()
        for i, c in enumerate(self.campaign):
            if c.id in seen:
                raise FieldError(("campaign", i, "id"), f"campaign id {c.id!r} is used twice")
            seen.add(c.id)
            if c.at >= self.duration:
                raise FieldError(
                    ("campaign", i, "at"),
                    f"triggered at {fmt_s(c.at)}, not before the end of the run ({fmt_s(self.duration)})",
                )
        return self

    @model_validator(mode="after")
    def _analytics_fits(self) -> Scenario:
        """The chaos proxy fronts the webhooks at the URL the file gives: not the target's receiver."""
        receiving = self.analytics is not None and self.analytics.receiver == "target"
        if receiving and any(s.network is not None for s in self.chaos):
            raise FieldError(
                ("analytics", "receiver"),
                "target cannot be combined with network chaos steps yet (the proxy would front the "
                "webhooks at esp.webhooks.url); give esp.webhooks.url instead",
            )
        return self

    @model_validator(mode="after")
    def _timeline_fits(self) -> Scenario:
        labels: set[str] = set()
        for i, step in enumerate(self.chaos):
            label = step.label(i)
            if label in labels:
                raise FieldError(("chaos", i, "name"), f"name {label!r} is used twice on the timeline")
            labels.add(label)
            if step.at >= self.duration:
                raise FieldError(
                    ("chaos", i, "at"),
                    f"starts at {fmt_s(step.at)}, not before the end of the load ({fmt_s(self.duration)})",
                )
            if step.end is not None and step.end > self.duration + 1e-9:
                raise FieldError(
                    ("chaos", i, "for"),
                    f"ends at {fmt_s(step.end)}, past the end of the load (duration {fmt_s(self.duration)})",
                )
            if step.esp is not None and step.esp not in {e.label for e in self.fleet}:
                have = ", ".join(e.label for e in self.fleet)
                raise FieldError(
                    ("chaos", i, "esp"),
                    f"names ESP {step.esp!r}, which this run does not have (it has: {have})",
                )
            self._parts_exist(i, step)
        for alert, steps in (self.alerts.map if self.alerts is not None else {}).items():
            for step in steps:
                if step not in labels:
                    known = ", ".join(sorted(labels)) or "none"
                    msg = f"{step!r} is no chaos step's name (the timeline has: {known})"
                    raise FieldError(("alerts", "map", alert), msg)
        return self

    def _parts_exist(self, i: int, step: ChaosStep) -> None:
        """A step narrowed with ``on`` to a part this run does not have would touch nothing."""
        narrowed = step.network.on if step.network is not None else None
        if step.esp_outage is not None:
            narrowed = step.esp_outage.on
        # A network step naming no ESP acts on every ESP's paths: one of them having the part is enough.
        esps = self.fleet if step.network is not None and step.esp is None else (self.esp_named(step.esp),)
        where = "esp" if self.esps is None else f"esps[{self.fleet.index(esps[0])}]"
        missing = {
            "http": (any(e.http_port is not None for e in esps), f"{where}.http_port"),
            "webhooks": (any(e.webhooks is not None for e in esps), f"{where}.webhooks"),
        }
        for part in narrowed or ():
            if part in missing and not missing[part][0]:
                raise FieldError(
                    ("chaos", i, step.what, "on"),
                    f"names {part}, which this run does not have (set {missing[part][1]})",
                )

    def resolved(self) -> dict[str, Any]:
        """The scenario as JSON-able data with every default filled in (what ``scenario.yaml`` holds)."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        # What the run derives (the load's duration, the ESP's seed) stays out, so the file validates again.
        if "load" in data:
            data["load"].pop("duration_s", None)
        if self.esps is not None:
            del data["esp"]  # the default one, not the run's
        for esp in data.get("esps") or [data["esp"]]:
            esp.pop("seed", None)
            esp.pop("correlation", None)  # load.correlation says it
        return data


def _esp_steps_name_their_esp(data: dict[str, Any]) -> dict[str, Any]:
    """With several ESPs, an ESP step that names none acts on the first: said on the step, so the
    timeline's records (and the reports) name the ESP whatever the file left out."""
    esps, chaos = data.get("esps"), data.get("chaos")
    if not (isinstance(esps, list) and esps and isinstance(esps[0], dict) and isinstance(chaos, list)):
        return data
    first = esps[0].get("name")
    if not isinstance(first, str):
        return data  # the ESP's own validation names the problem
    steps = [
        {**step, "esp": first}
        if isinstance(step, dict) and "esp" not in step and ("esp_fault" in step or "esp_outage" in step)
        else step
        for step in chaos
    ]
    return {**data, "chaos": steps}


def _smtp_target_options_to_load(data: dict[str, Any]) -> dict[str, Any]:
    """An smtp target's STARTTLS and AUTH are said once, on the target: the start-up check uses them and
    so does the load (unless ``load.smtp`` sets its own). Saying them only on the target used to check
    the SUT with them and then submit without them."""
    target, load = data.get("target"), data.get("load")
    if not (isinstance(target, dict) and target.get("kind") == "smtp" and isinstance(load, dict)):
        return data
    smtp = dict(load.get("smtp") or {}) if isinstance(load.get("smtp") or {}, dict) else None
    if smtp is None:
        return data  # the load's own validation names the problem
    if target.get("starttls") and "starttls" not in smtp:
        smtp["starttls"] = True
    auth = target.get("auth")
    if isinstance(auth, dict) and "auth" not in smtp:
        # The target's check logs in as configured (plain text on loopback when no STARTTLS is asked).
        smtp["auth"] = {**auth, "allow_plaintext": not smtp.get("starttls", False)}
    if smtp:
        data = {**data, "load": {**load, "smtp": smtp}}
    return data


# Reserved: the run decides these, a file setting them would be silently ignored otherwise.
_RUN_OWNED = {
    ("esp", "seed"): "the ESP's seed is derived from the scenario's seed",
    ("esp", "ledger"): "the ESP writes into the run directory's ledger/",
    ("esp", "correlation"): "set load.correlation: the fake ESP reads the id where the load puts it",
    ("esp", "tls_ca"): "the ESP writes its CA to the run directory's esp/ca.pem",
    ("load", "duration_s"): "set the top-level 'duration' (the load runs for it)",
}


def validate_document(doc: Document, *, seed: int | None = None, duration: float | None = None) -> Scenario:
    """Validate a parsed document (with optional command-line overrides) into a ``Scenario``."""
    data = doc.data
    if not isinstance(data, dict):
        raise doc.error_at((), f"a scenario is a mapping of fields, got {type(data).__name__}")
    for (section, key), why in _RUN_OWNED.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            raise doc.error_at((section, key), f"not allowed here: {why}")
        for j, esp in enumerate(data.get("esps") or [] if section == "esp" else []):
            if isinstance(esp, dict) and key in esp:
                raise doc.error_at(("esps", j, key), f"not allowed here: {why}")
    data = dict(data)
    alerts = data.get("alerts")
    if isinstance(alerts, dict) and isinstance(alerts.get("rules"), str) and Path(doc.name).is_file():
        # A rules file named relative to the scenario file sits beside it (as the library's do).
        data["alerts"] = {**alerts, "rules": str(Path(doc.name).resolve().parent / alerts["rules"])}
    if seed is not None:
        data["seed"] = seed
    if duration is not None:
        data["duration"] = duration
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        cross = _cross_field(exc)
        if cross is not None:
            raise doc.error_at(cross.loc, str(cross)) from None
        raise doc.error(exc) from None


def _cross_field(exc: ValidationError) -> FieldError | None:
    for err in exc.errors(include_url=False):
        ctx_error = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_error, FieldError):
            return ctx_error
    return None


def load_scenario(path: str | Path, *, seed: int | None = None, duration: float | None = None) -> Scenario:
    """Read, parse and validate a scenario file; ``ConfigError`` (one line, file:line: field: why)."""
    return validate_document(load_yaml(path), seed=seed, duration=duration)


def load_scenario_text(text: str, *, name: str = "<string>") -> Scenario:
    return validate_document(parse_yaml(text, name=name))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a scenario file (for editor completion and validation)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mailstorm scenario"
    many = schema["properties"]["campaign"]
    # A file may write one campaign as a mapping (the model makes it a list of one).
    schema["properties"]["campaign"] = {
        "anyOf": [many["items"], many],
        "description": "one campaign or a list",
    }
    schema_url_optional(schema)
    return schema


def check_overrides(duration: str | None) -> float | None:
    """Parse the ``--duration`` flag the way the file's durations are parsed."""
    if duration is None:
        return None
    try:
        seconds = float(parse_duration(duration))
    except (ValueError, TypeError):
        raise ConfigError(f"--duration: {duration!r} is not a duration (use 30, 30s, 2m)") from None
    if seconds <= 0:
        raise ConfigError(f"--duration: must be positive, got {duration!r}")
    return seconds
