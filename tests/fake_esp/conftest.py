"""Fixtures of the fake ESP tests: a running ESP per module (reset between tests) and SMTP helpers.

The ``fake_esp`` fixture comes from the plugin the package ships (entry point pytest11); when the
package is not installed (a plain checkout), it is registered here so the tests see the same fixture.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import mailstorm.fake_esp.pytest_plugin as plugin
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import LedgerReader


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(plugin):
        config.pluginmanager.register(plugin, "mailstorm.fake_esp.pytest_plugin")


@dataclass
class Esp:
    proc: EspProcess
    ledger: LedgerReader

    @property
    def port(self) -> int:
        return self.proc.smtp_port

    @property
    def control(self):
        return self.proc.control


@pytest.fixture(scope="module")
def esp_module(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp")
    with EspProcess(d / "ledger", seed=7, log_path=d / "esp.log", max_message_size=64 * 1024) as proc:
        yield Esp(proc, LedgerReader(d / "ledger"))


@pytest.fixture
def esp(esp_module: Esp):
    """The module's ESP with no faults installed."""
    esp_module.control.reset()
    yield esp_module
    esp_module.control.reset()
