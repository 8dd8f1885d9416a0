"""One fake ESP serving every ESP's HTTP API for the whole ``esps`` test package (its faults reset around
each test), so every test module costs one process start; it must log no traceback."""

from __future__ import annotations

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ports import free_port


@pytest.fixture(scope="package")
def esp_http(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esps")
    with EspProcess(d / "ledger", http_port=free_port(), seed=3, log_path=d / "esp.log") as proc:
        yield proc
    assert "Traceback" not in (d / "esp.log").read_text(), "the fake ESP logged a traceback"


@pytest.fixture
def esp(esp_http: EspProcess):
    """The package's ESP with no faults installed."""
    esp_http.control.reset()
    yield esp_http
    esp_http.control.reset()
