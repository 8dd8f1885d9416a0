"""The Target protocol is the runner's seam: the runner holds a ``Target``, refuses a class that is not one,
and checks every address a target names through the loopback guard, whatever the spec's field is called;
URLs a target gives at run time (health, metrics) pass the guard too."""

from __future__ import annotations

import pytest

from mailstorm.errors import ConfigError, HarnessError, TargetNotAllowed
from mailstorm.harness.probes import resolve_probes
from mailstorm.harness.run import Run
from mailstorm.harness.scenario import ProbeSpec, validate_document
from mailstorm.harness.targets.base import TARGETS, Address, Monitored, Target
from mailstorm.yamlload import parse_yaml

SMTP_SCENARIO = """name: seam
duration: 5s
load: {shape: {kind: steady, rate: 5}}
target:
  kind: smtp
  endpoints: ["127.0.0.1:2525"]
"""


def preflight(text: str, *, allow_remote: bool = False) -> Run:
    doc = parse_yaml(text, name="seam.yaml")
    run = Run(validate_document(doc), allow_remote=allow_remote, document=doc)
    run.preflight()
    return run


class _SmtpUnderAnotherName:
    """A target whose spec's relay host sits in a field no name-based check would look at."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def addresses(self) -> list[Address]:
        return [Address("127.0.0.1", ("endpoints", 0)), Address("192.0.2.7", ("endpoints",))]

    def start(self, ctx):
        raise AssertionError("preflight starts nothing")

    def stop(self) -> None:
        pass


class _NoAddresses:
    """Start and stop, but no word on where it sends traffic."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def start(self, ctx):
        raise AssertionError("preflight starts nothing")

    def stop(self) -> None:
        pass


def test_every_registered_target_kind_is_a_target():
    """Each built-in kind implements the protocol the runner holds (addresses, start, stop)."""
    for kind, cls in TARGETS.items():
        assert isinstance(cls.__new__(cls), Target), kind


def test_the_runner_checks_the_addresses_the_target_names(monkeypatch):
    """A remote address a target reports is refused before anything starts, naming the field and line,
    though no field is called host or endpoints in the way the runner once looked for."""
    monkeypatch.setattr(_SmtpUnderAnotherName, "kind", "smtp", raising=False)
    monkeypatch.setitem(TARGETS._ready(), "smtp", _SmtpUnderAnotherName)
    with pytest.raises(ConfigError, match=r"^seam\.yaml:6: target\.endpoints: .*'192\.0\.2\.7'.*loopback"):
        preflight(SMTP_SCENARIO)
    preflight(SMTP_SCENARIO + "allow_remote: true\n", allow_remote=True)


def test_a_class_that_is_not_a_target_is_refused(monkeypatch):
    """A registered class without ``addresses`` cannot skip the loopback check: the runner refuses it."""
    monkeypatch.setattr(_NoAddresses, "kind", "smtp", raising=False)
    monkeypatch.setitem(TARGETS._ready(), "smtp", _NoAddresses)
    with pytest.raises(HarnessError, match="does not implement the Target protocol"):
        preflight(SMTP_SCENARIO)


def test_a_process_targets_ready_url_is_an_address():
    """The process target's ready_url is polled from this machine: a remote one needs file and flag."""
    text = """name: seam
duration: 5s
load: {shape: {kind: steady, rate: 5}}
target:
  kind: process
  command: [sleep, "30"]
  ready_url: "http://198.51.100.9:{port}/ready"
"""
    with pytest.raises(ConfigError, match=r"^seam\.yaml:7: target\.ready_url: .*'198\.51\.100\.9'"):
        preflight(text)
    local = text.replace("198.51.100.9", "{host}")
    assert preflight(local)._target.addresses()[-1] == Address("127.0.0.1", ("ready_url",))


class _Monitored:
    def __init__(self, host: str) -> None:
        self.host = host

    @property
    def health_urls(self) -> list[str]:
        return [f"http://{self.host}:9100/health"]

    @property
    def metrics_urls(self) -> list[str]:
        return [f"http://{self.host}:9100/metrics"]


def test_urls_a_target_gives_pass_the_guard():
    """``target: health`` probes take the target's URLs (the Monitored ability); a remote one is refused
    unless the run allows remote traffic."""
    probes = (ProbeSpec(target="health"),)
    assert isinstance(_Monitored("127.0.0.1"), Monitored)
    (probe,) = resolve_probes(probes, _Monitored("127.0.0.1"), "x")
    assert probe.url == "http://127.0.0.1:9100/health"
    with pytest.raises(TargetNotAllowed, match=r"probes\[0\]: the target's health URL '203\.0\.113\.5'"):
        resolve_probes(probes, _Monitored("203.0.113.5"), "x")
    assert resolve_probes(probes, _Monitored("203.0.113.5"), "x", allow_remote=True)
