"""One home per ESP: each ESP's HTTP API, webhook format and profile live in ``fake_esp/esps/<name>/``,
register under that name, and agree with each other; each has its test module here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mailstorm.fake_esp.http.api import ESP_APIS
from mailstorm.fake_esp.profiles import PROFILE_NAMES, load_profile
from mailstorm.fake_esp.spec import parse_fault
from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS
from mailstorm.registry import home_names

HOMES = home_names("mailstorm.fake_esp.esps")
ESPS = ESP_APIS.names()


def test_every_home_registers_under_its_own_name():
    """Each API and webhook format comes from the home of its name; every home holding a profile is a
    profile of its name (``_`` written ``-``); every webhook format has its API, and the APIs without a
    format are the platforms faked for their rate limits (HubSpot, Klaviyo)."""
    for name, cls in ESP_APIS.items():
        assert cls.__module__ == f"mailstorm.fake_esp.esps.{name}.api"
    for name, cls in WEBHOOK_FORMATS.items():
        assert cls.__module__ == f"mailstorm.fake_esp.esps.{name}.webhook"
    assert set(WEBHOOK_FORMATS.names()) <= set(ESPS) and len(WEBHOOK_FORMATS.names()) == 13
    assert set(ESPS) - set(WEBHOOK_FORMATS.names()) == {"hubspot", "klaviyo"}
    assert set(PROFILE_NAMES) == {home.replace("_", "-") for home in HOMES}
    for name in PROFILE_NAMES:
        assert load_profile(name).name == name


@pytest.mark.parametrize("name", ESPS)
def test_profile_loads_and_its_faults_are_valid(name):
    """Each ESP's profile loads, names its API, cites its sources, has a webhook retry policy when it
    posts webhooks (none when it posts none), and turns into valid fault specs."""
    profile = load_profile(name)
    assert profile.api == name and profile.title and profile.sources
    if WEBHOOK_FORMATS.get(name) is not None:
        assert profile.webhook is not None and profile.webhook.retry_schedule_s
    else:
        assert profile.webhook is None
    for rate in (None, 5.0):
        assert all(parse_fault(f).name.startswith("profile.") for f in profile.faults(rate=rate))


def test_every_esp_has_its_test_module():
    """The test layout follows the homes: tests/fake_esp/esps/test_<name>.py for each ESP."""
    missing = [name for name in ESPS if not (Path(__file__).parent / f"test_{name}.py").is_file()]
    assert not missing, missing


def test_list_profiles_shows_each_with_a_one_line_description():
    """`mailstorm esp --list-profiles` lists every profile, each on one line ending in its title."""
    out = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "esp", "--list-profiles"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    for name in PROFILE_NAMES:
        assert lines[name].rstrip().endswith(load_profile(name).title)
