"""Shared test set-up: every test runs against real servers on free loopback ports.

The fake ESP fixture itself ships with the package (mailstorm.fake_esp.pytest_plugin, loaded through the
pytest11
entry point), so users get the same fixture as these tests.
"""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True, scope="session")
def _no_gevent_in_the_test_process():
    """Locust monkey-patches sockets; it must only ever run in its own processes, never in pytest's."""
    yield
    assert "locust" not in sys.modules, "a test imported locust into the pytest process"
