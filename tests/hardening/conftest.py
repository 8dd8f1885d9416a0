"""Fixtures of the hardening tests: one fake ESP and one reference pipeline relaying to it, per module."""

from __future__ import annotations

import pytest

from mailstorm.fake_esp.launch import EspProcess
from tests.hardening.support import ReferenceProcess


@pytest.fixture(scope="module")
def esp(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp")
    with EspProcess(d / "ledger", seed=8, log_path=d / "esp.log") as proc:
        yield proc


@pytest.fixture(scope="module")
def reference(esp: EspProcess, tmp_path_factory: pytest.TempPathFactory):
    with ReferenceProcess(tmp_path_factory.mktemp("reference"), esp.smtp_port) as ref:
        yield ref
