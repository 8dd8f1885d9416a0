"""The scenario model: files in, frozen typed objects out, errors naming field and line."""

from __future__ import annotations

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from mailstorm.errors import ConfigError
from mailstorm.harness.commands import LIBRARY
from mailstorm.harness.scenario import (
    ChaosStep,
    Scenario,
    json_schema,
    load_scenario,
    load_scenario_text,
    parse_duration,
    validate_document,
)
from mailstorm.harness.timeline import schedule
from mailstorm.yamlload import parse_yaml

LIBRARY_FILES = sorted(LIBRARY.glob("*.yaml"))
BASE = """\
name: t
duration: 20s
load:
  shape: {kind: steady, rate: 5}
"""


def test_the_library_has_every_ready_scenario():
    """The ready scenarios the docs promise are all in the library (plus the demo)."""
    names = {p.stem for p in LIBRARY_FILES}
    wanted = {
        "smoke",
        "spike",
        "esp-outage",
        "esp-throttling",
        "slow-esp",
        "capacity-ramp",
        "soak",
        "campaign",
        "esp-failover",
    }
    assert wanted | {"demo"} <= names


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.stem)
def test_library_scenarios_validate_and_round_trip(path):
    """Each library file validates, and its resolved form (what a run writes) validates to the same object."""
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    again = load_scenario_text(yaml.safe_dump(scenario.resolved()))
    assert again == scenario


def test_the_ready_scenarios_run_against_the_reference_pipeline():
    """The ready scenarios need nothing installed: each targets the embedded reference pipeline."""
    for name in ("demo", "smoke", "spike", "esp-outage", "esp-throttling", "slow-esp", "capacity-ramp"):
        assert load_scenario(LIBRARY / f"{name}.yaml").target.kind == "reference"
    for name in ("soak", "campaign", "esp-failover"):
        assert load_scenario(LIBRARY / f"{name}.yaml").target.kind == "reference"


def test_smoke_fits_in_30_seconds():
    """The CI scenario's load plus drain deadline stays within 30 s."""
    smoke = load_scenario(LIBRARY / "smoke.yaml")
    assert smoke.duration + smoke.drain_deadline <= 30


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: p.stem)
def test_json_schema_accepts_library_files(path):
    """`mailstorm schema` describes the files users write: each library file validates against it."""
    jsonschema.validate(yaml.safe_load(path.read_text()), json_schema())


def test_json_schema_rejects_an_unknown_key():
    """The schema forbids unknown keys, as the model does (editors flag typos)."""
    data = yaml.safe_load(BASE) | {"colour": "red"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json_schema())


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("1.5 s", 1.5),
    ],
)
def test_durations_take_units(text, seconds):
    """Durations are seconds or strings with a unit, combinable (1m30s)."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 seconds", "-5s", "5x", "s", True])
def test_bad_durations_are_refused(text):
    """A duration that is not a number or number+unit is an error, not a silent zero."""
    with pytest.raises(ValueError):
        parse_duration(text)


def test_load_duration_comes_from_the_scenario():
    """The load runs for the top-level duration (the file never says it twice)."""
    sc = load_scenario_text(BASE)
    assert sc.load.duration_s == sc.duration == 20.0


def test_esp_ports_are_free_unless_fixed():
    """ESP ports not in the file are None (chosen free at run time); a fixed one is kept."""
    free = load_scenario_text(BASE)
    assert (free.esp.smtp_port, free.esp.control_port, free.esp.http_port) == (None, None, None)
    fixed = load_scenario_text(BASE + "esp: {smtp_port: 2600, http_port: 0}\n")
    assert (fixed.esp.smtp_port, fixed.esp.http_port) == (2600, 0)


def test_a_network_step_may_name_the_esp_whose_paths_it_acts_on():
    """With several ESPs a network step may name one (its toxic then acts on that ESP's proxy paths); one
    naming none acts on every ESP's, so ``on: [http]`` is fine when any ESP serves HTTP; a target step
    naming an ESP is refused, naming the field."""
    esps = "esps:\n  - {name: primary}\n  - {name: secondary, http_port: 0}\n"
    step = "chaos:\n  - {at: 2s, for: 3s, %s network: {type: latency, ms: 10, on: [http]}}\n"
    sc = load_scenario_text(BASE + esps + step % "esp: secondary,")
    assert sc.chaos[0].esp == "secondary"
    assert load_scenario_text(BASE + esps + step % "").chaos[0].esp is None
    with pytest.raises(ConfigError, match=r"chaos\[0\]\.network\.on: names http.*esps\[0\]\.http_port"):
        load_scenario_text(BASE + esps + step % "esp: primary,")
    with pytest.raises(ConfigError, match=r"chaos\[0\]\.esp: names ESP 'third'"):
        load_scenario_text(BASE + esps + step % "esp: third,")
    target = "chaos:\n  - {at: 2s, esp: primary, target: {action: kill}}\n"
    with pytest.raises(ConfigError, match="a target step has none"):
        load_scenario_text(BASE + esps + target)


def test_the_esp_reads_the_correlation_carrier_the_load_writes():
    """load.correlation is said once: the fake ESP reads that carrier; the ESP section may not set its
    own (a mismatch would lose every id), and the resolved form round-trips."""
    assert load_scenario_text(BASE).esp.correlation == "header"
    text = BASE.replace("load:\n", "load:\n  correlation: recipient\n")
    sc = load_scenario_text(text)
    assert (sc.load.correlation, sc.esp.correlation) == ("recipient", "recipient")
    assert load_scenario_text(yaml.safe_dump(sc.resolved())) == sc
    with pytest.raises(ConfigError, match=r"^<string>:6: esp\.correlation: not allowed here: set load"):
        load_scenario_text(BASE + "esp:\n  correlation: body\n")
    with pytest.raises(ConfigError, match=r"load\.correlation"):
        load_scenario_text(BASE.replace("load:\n", "load:\n  correlation: subject\n"))


def test_the_default_target_is_the_reference_pipeline():
    """A scenario without a target runs against the embedded reference pipeline."""
    assert load_scenario_text(BASE).target.kind == "reference"


def test_the_model_is_frozen():
    """A validated scenario cannot be changed by the code that reads it."""
    sc = load_scenario_text(BASE)
    with pytest.raises(ValidationError):
        sc.seed = 5  # type: ignore[misc]


def test_overrides_are_validated_like_the_file():
    """--duration shorter than the timeline is refused naming the chaos step's line; --seed replaces."""
    text = BASE + "chaos:\n  - at: 12s\n    for: 4s\n    esp_outage: {mode: refuse}\n"
    doc = parse_yaml(text, name="f.yaml")
    assert validate_document(doc, seed=9).seed == 9
    with pytest.raises(ConfigError, match=r"^f\.yaml:6: chaos\[0\]\.at: starts at 12s"):
        validate_document(doc, duration=10.0)


def test_a_missing_field_is_reported_on_its_parents_line():
    """A required field that is absent is named, on the line of the mapping that lacks it."""
    text = BASE + "chaos:\n  - at: 2s\n    for: 2s\n    esp_fault:\n      type: latency\n      phase: eod\n"
    with pytest.raises(ConfigError, match=r"^<string>:8: chaos\[0\]\.esp_fault"):
        load_scenario_text(text)


def test_target_action_shorthand():
    """`target: kill` is the same as `target: {action: kill}`."""
    a = ChaosStep.model_validate({"at": 1, "target": "kill"})
    b = ChaosStep.model_validate({"at": 1, "target": {"action": "kill"}})
    assert a == b
    assert a.what == "target" and a.params() == {"action": "kill", "params": {}}


def test_schedule_closes_a_window_before_the_next_opens():
    """At equal times ends fire before begins, so back-to-back windows never overlap."""
    steps = (
        ChaosStep.model_validate({"at": 0, "for": 5, "esp_outage": {}}),
        ChaosStep.model_validate({"at": 5, "for": 5, "esp_outage": {"mode": "hang"}}),
    )
    order = [(e.at, e.begin, e.index) for e in schedule(steps)]
    assert order == [(0, True, 0), (5, False, 0), (5, True, 1), (10, False, 1)]


@given(
    duration=st.floats(min_value=1, max_value=1000),
    at=st.floats(min_value=0, max_value=1200),
    length=st.floats(min_value=0.001, max_value=1200),
)
def test_a_step_is_valid_exactly_when_it_fits_in_the_load(duration, at, length):
    """Property: a timeline step validates if and only if it starts before and ends by the end of the load."""
    data = {
        "name": "p",
        "duration": duration,
        "load": {"shape": {"kind": "steady", "rate": 1}},
        "chaos": [{"at": at, "for": length, "esp_outage": {"mode": "refuse"}}],
    }
    fits = at < duration and at + length <= duration + 1e-9
    try:
        Scenario.model_validate(data)
        valid = True
    except ValidationError:
        valid = False
    assert valid == fits


def test_smtp_target_starttls_and_auth_reach_the_load():
    """STARTTLS and AUTH said on an smtp target are used by the load too, unless load.smtp says its own."""
    text = (
        "name: t\nduration: 10s\n"
        "target: {kind: smtp, endpoints: ['127.0.0.1:2525'], starttls: true, auth: {user: u, password: p}}\n"
        "load: {shape: {kind: steady, rate: 1}}\n"
    )
    sc = load_scenario_text(text)
    assert sc.load.smtp.starttls is True
    assert (sc.load.smtp.auth.user, sc.load.smtp.auth.password) == ("u", "p")
    own_smtp = "smtp: {starttls: false, auth: {user: v, password: q, allow_plaintext: true}}"
    sc = load_scenario_text(text.replace("rate: 1}}", "rate: 1}, " + own_smtp + "}"))
    assert sc.load.smtp.starttls is False and sc.load.smtp.auth.user == "v"


def test_on_narrows_outages_and_toxics_to_parts_the_run_has():
    """``on:`` (a plain YAML key, not the YAML 1.1 boolean) narrows an outage or a toxic; naming the HTTP
    APIs or the webhooks when the ESP serves none is refused on the step's line; a crash cannot narrow."""
    steps = (
        "chaos:\n  - {at: 1s, for: 2s, esp_outage: {mode: hang, on: [http]}}\n"
        "  - {at: 4s, for: 2s, network: {type: reset, on: [smtp, http]}}\n"
    )
    sc = load_scenario_text(BASE + "esp: {http_port: 0}\n" + steps)
    assert sc.chaos[0].params() == {"mode": "hang", "on": ["http"]} and sc.chaos[1].network.on == (
        "smtp",
        "http",
    )
    with pytest.raises(
        ConfigError, match=r"^<string>:6: chaos\[0\]\.esp_outage\.on: names http.*esp\.http_port"
    ):
        load_scenario_text(BASE + steps)
    hooks = "chaos:\n  - {at: 1s, for: 2s, network: {type: blackhole, on: [webhooks]}}\n"
    with pytest.raises(ConfigError, match=r"chaos\[0\]\.network\.on: names webhooks.*esp\.webhooks"):
        load_scenario_text(BASE + hooks)
    with pytest.raises(ConfigError, match="a crash takes the whole ESP"):
        load_scenario_text(BASE + "chaos:\n  - {at: 1s, for: 2s, esp_outage: {mode: crash, on: [smtp]}}\n")


ALERTS = BASE + "chaos:\n  - {at: 5s, for: 5s, name: esp-down, esp_outage: {mode: refuse}}\n"


def test_alerts_section_names_real_chaos_steps():
    text = ALERTS + "alerts:\n  start: false\n  map: {EspDown: [esp-gone]}\n"
    with pytest.raises(
        ConfigError, match=r"alerts\.map\.EspDown: 'esp-gone' is no chaos step's name .*esp-down"
    ):
        load_scenario_text(text)
    ok = load_scenario_text(ALERTS + "alerts:\n  start: false\n  map: {EspDown: [esp-down]}\n  grace: 2s\n")
    assert ok.alerts.map == {"EspDown": ("esp-down",)} and ok.alerts.grace == 2.0 and ok.alerts.rules is None


def test_starting_prometheus_needs_a_rules_file():
    with pytest.raises(ConfigError, match=r"alerts: .*a rules file is needed to start Prometheus"):
        load_scenario_text(ALERTS + "alerts: {scrape_interval: 1s}\n")


def test_a_rules_file_is_found_beside_its_scenario(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(ALERTS + "alerts: {rules: my.rules.yml}\n")
    assert load_scenario(path).alerts.rules == tmp_path / "my.rules.yml"
