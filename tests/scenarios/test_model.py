"""LoadSpec: the scenario file's ``load:`` section, validated once, with errors that name the field."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from mailstorm.scenarios.model import LoadSpec
from mailstorm.scenarios.shapes import Spike, Steady

EXAMPLE = """
protocol: smtp
shape: {kind: spike, base_rate: 50, factor: 10, at_s: 30, for_s: 10}
duration_s: 90
arrivals: poisson
messages:
  - {name: receipt, weight: 8, size: 2KB}
  - {name: newsletter, weight: 2, size: 30KB, html: true, recipients: [1, 5]}
  - {name: invoice, weight: 1, size: 500KB, attachment: true}
msgs_per_connection: 50
max_connections: 200
max_lag_s: 1
workers: 2
smtp: {starttls: true, auth: {user: loadtest, password: secret}}
"""


def test_the_documented_example_parses_and_round_trips():
    """The example load section parses to typed objects and survives a JSON round trip (how the
    launcher hands it to every Locust process)."""
    spec = LoadSpec.model_validate(yaml.safe_load(EXAMPLE))
    assert isinstance(spec.shape, Spike) and spec.shape.factor == 10
    assert [m.name for m in spec.messages] == ["receipt", "newsletter", "invoice"]
    assert int(spec.messages[2].size) == 500_000
    assert spec.messages[1].recipients == (1, 5)
    assert spec.distributed and spec.processes == 2 and not spec.closed
    assert LoadSpec.model_validate_json(spec.model_dump_json()) == spec


def test_defaults_make_a_small_steady_smtp_load():
    """With nothing set, the load is a steady 10 msg/s of 2 KB single-recipient messages, one process."""
    spec = LoadSpec()
    assert spec.shape == Steady(rate=10) and spec.protocol == "smtp" and spec.processes == 1


def test_spec_is_frozen():
    """A parsed spec cannot be changed afterwards."""
    with pytest.raises(ValidationError):
        LoadSpec().duration_s = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        ({"duration_s": 0}, "duration_s"),
        ({"workers": 0}, "workers"),
        ({"shape": {"kind": "steady"}}, "shape.steady.rate"),
        ({"messages": []}, "messages"),
        ({"messages": [{"size": "12 parsecs"}]}, "messages.0.size"),
        ({"messages": [{"recipients": [5, 2]}]}, "recipients: min 5 is above max 2"),
        ({"protocol": "http"}, "load.http is required"),
        ({"http": {"api": "sendgrid"}}, "protocol is 'smtp'"),
        ({"protocol": "http", "http": {"api": "custom"}}, "body_template is required"),
        ({"protocol": "http", "http": {"body_template": "{{ nope }}"}}, "unknown variable(s) ['nope']"),
        ({"smtp": {"auth": {"user": "u", "password": "p"}}}, "needs load.smtp.starttls"),
        ({"rate": 5}, "rate"),
    ],
)
def test_bad_input_is_refused_naming_the_field(doc, names):
    """Each kind of mistake is refused with a message that names the field (or says what is wrong)."""
    with pytest.raises(ValidationError) as err:
        LoadSpec.model_validate(doc)
    assert names in str(err.value)


@pytest.mark.parametrize(
    "doc",
    [
        {"duration_s": float("inf")},
        {"shape": {"kind": "steady", "rate": float("inf")}},
        {"shape": {"kind": "spike", "base_rate": 1, "factor": float("nan"), "at_s": 1, "for_s": 1}},
        {"max_lag_s": float("nan")},
    ],
)
def test_infinity_and_nan_are_refused(doc):
    """No rate, duration or lag may be infinite or NaN: no schedule could keep it."""
    with pytest.raises(ValidationError, match="finite"):
        LoadSpec.model_validate(doc)
