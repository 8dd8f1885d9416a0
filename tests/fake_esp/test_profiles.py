"""ESP profiles: every number cited, replies valid, limits turned into faults, the CLI around them."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mailstorm.errors import ConfigError
from mailstorm.fake_esp.profiles import PROFILE_NAMES, PROFILES, load_profile, parse_profile
from mailstorm.fake_esp.spec import parse_fault
from mailstorm.replies import SES_THROTTLED

# A YAML line whose value is a number, a list/mapping of numbers, or null (a "no published number").
_VALUE_LINE = re.compile(r"^\s*[\w-]+:\s*(-?\d|\[|\{|null\b)")
_SRC = re.compile(r"#\s*src:\s*([\w-]+(?:\s*,\s*[\w-]+)*)")


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_every_number_names_a_source_the_file_lists(name):
    """Each line holding a number (or null) carries '# src: key' and every key is in the file's sources."""
    text = PROFILES[name].read_text()
    sources = set(load_profile(name).sources)
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#") or not _VALUE_LINE.match(line):
            continue
        if line.strip() in ("smtp: null", "api: null"):  # "no latency": nothing to cite
            continue
        m = _SRC.search(line)
        assert m, f"{name}.yaml line {n} has a number without '# src:': {line.strip()}"
        keys = {k.strip() for k in m.group(1).split(",")}
        assert keys <= sources, f"{name}.yaml line {n} cites unknown source(s) {keys - sources}"


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_profile_faults_are_valid_fault_specs(name):
    """Whatever a profile turns into (with and without --rate) the fault engine's spec parser accepts."""
    for rate in (None, 14.0):
        for fault in load_profile(name).faults(rate=rate):
            assert parse_fault(fault).name.startswith("profile.")


def test_ses_at_14_per_second_throttles_with_ses_replies():
    """SES + --rate 14: 454 4.7.0 Throttling failure after DATA over SMTP, 429 over the API, depth 2."""
    faults = {f["name"]: f for f in load_profile("ses").faults(rate=14)}
    smtp, http = faults["profile.throttle.smtp"], faults["profile.throttle.http"]
    assert (
        smtp["reply"] == str(SES_THROTTLED) == "454 4.7.0 Throttling failure: Maximum sending rate exceeded"
    )
    assert (smtp["rate"], smtp["burst"], smtp["phase"]) == (14, 2, "eod")
    assert http["reply"].startswith("429 ") and http["key"] == "api_key"


def test_postmark_connection_limit_becomes_a_concurrency_fault():
    """Postmark's 10 concurrent SMTP connections: a concurrency fault of 10 answering 421."""
    (conc,) = [f for f in load_profile("postmark").faults() if f["type"] == "concurrency"]
    assert conc["max_sessions"] == 10 and conc["reply"].startswith("421 ")


def test_a_bad_profile_names_the_field():
    """A profile that fails validation raises ConfigError naming the field."""
    text = PROFILES["ses"].read_text()
    with pytest.raises(ConfigError, match=r"limits.rate"):
        parse_profile(text.replace("rate: 1 ", "rate: -3 ", 1), where="x.yaml")
    with pytest.raises(ConfigError, match=r"smtp.throttle"):
        parse_profile(text.replace("throttle: SES_THROTTLED", "throttle: 99 nonsense"), where="x.yaml")
    with pytest.raises(ConfigError, match="unknown ESP profile 'nope'"):
        load_profile("nope")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstorm.fake_esp", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_cli_lists_profiles_and_refuses_bad_ones_in_one_line():
    """--list-profiles prints every profile; an unknown profile or a bad rate is one line and exit 2."""
    out = run_cli("--list-profiles")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == list(PROFILE_NAMES)
    for args, needle in ((("--profile", "nope"), "--profile"), (("--rate", "0"), "--rate")):
        bad = run_cli(*args)
        assert bad.returncode == 2 and needle in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
