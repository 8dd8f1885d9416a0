"""run.json, the runner's word on a run: typed once, every key read is one the runner writes, and an
older run.json (or one written by hand) still loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.profiles import Limits
from mailstorm.runinfo import EspInfo, EspLimits, RunInfo, load_run_info

ROOT = Path(__file__).resolve().parents[2]
RUNNER = [
    ROOT / "harness" / f"{name}.py" for name in ("run", "esp_setup", "esp_fleet", "esp_hosts")
]  # esp_hosts: the hosts of esp.hosts


def test_every_field_is_written_by_the_runner():
    """Each field of RunInfo (and of its parts) is set by the runner: nothing reads a key nothing writes."""
    source = "\n".join(p.read_text() for p in RUNNER)
    for model in (RunInfo, EspInfo):
        for name in model.model_fields:
            assert re.search(rf"\b{name}=|\.{name}\b", source), f"the runner never writes run.json {name}"
    # The ESP limits are the profile's own, dumped whole (and "source" when sizing names a profile).
    assert set(EspLimits.model_fields) - set(Limits.model_fields) == {"source"}


def test_the_reports_read_run_json_only_through_the_model():
    """No report code reads run.json as a dict (a key there would be one no model declares)."""
    for path in (ROOT / "reports").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\binfo(\.get\(|\[)", text), path
        assert not re.search(r"/ \"run\.json\"", text), f"{path} opens run.json itself"


def test_a_run_json_round_trips_and_leaves_unknown_values_out(tmp_path):
    """What the runner writes loads back equal; fields not known yet are not written as null."""
    limits = EspLimits.model_validate({"rate": 14.0, "burst": 3})
    info = RunInfo(run_id="r1", name="n", seed=3, started_ns=5, esp=EspInfo(smtp="127.0.0.1:1", pid=9))
    info.esp_limits = limits
    info.endpoints = ["smtp://127.0.0.1:2"]
    info.write(tmp_path)
    assert load_run_info(tmp_path) == info
    assert load_run_info(tmp_path).esp_limits.model_dump(exclude_none=True) == {"rate": 14.0, "burst": 3}
    text = (tmp_path / "run.json").read_text()
    assert "verdict" not in text and '"http"' not in text and not list(tmp_path.glob("*.tmp"))


def test_an_older_or_hand_written_run_json_loads(tmp_path):
    """Missing keys take their defaults; keys no longer written (faults, load) are ignored; endpoints may
    be a count."""
    (tmp_path / "run.json").write_text(
        '{"run_id": "old", "seed": 1, "endpoints": 3, "faults": [{"name": "x"}], "load": {"shape": {}}}'
    )
    info = load_run_info(tmp_path)
    assert (info.run_id, info.seed, info.endpoint_count, info.esp_limits, info.report) == (
        "old",
        1,
        3,
        None,
        None,
    )
    assert load_run_info(tmp_path / "nowhere") == RunInfo()
    assert RunInfo(endpoints=["a", "b"]).endpoint_count == 2 and RunInfo().endpoint_count == 1


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[]", "expected a JSON object"),
        ("{", "not valid JSON"),
        ('{"seed": "many"}', "seed:"),
        ('{"esp_limits": {"rate": "fast"}}', "esp_limits.rate:"),
    ],
)
def test_a_broken_run_json_is_one_line_naming_what_is_wrong(tmp_path, text, says):
    """A run.json that is not an object, not JSON, or has a value of the wrong type: a ConfigError saying
    where, in one line."""
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_run_info(tmp_path)
    assert says in str(err.value) and "\n" not in str(err.value)
