"""pytest plugin (entry point ``pytest11``): a ``fake_esp`` fixture for testing your own mail code.

    def test_my_sender(fake_esp):
        fake_esp.control.add_fault({"type": "reply", "phase": "rcpt", "reply": "451 4.3.0 Try later"})
        my_code.send(host=fake_esp.smtp_host, port=fake_esp.smtp_port)
        assert fake_esp.ledger.count("esp.replied") == 1

    def test_my_signup_mail(fake_esp):
        my_code.signup("ann@example.test", smtp_port=fake_esp.smtp_port)
        (mail,) = fake_esp.messages(rcpt="ann@example.test", min=1, timeout=5)  # waits, no sleep
        assert mail["subject"] == "Welcome"

The fixture starts a real fake ESP process on free loopback ports (one per test), yields a
``FakeEsp`` with ``smtp_host``, ``smtp_port``, ``http_url`` (None unless HTTP APIs are served),
``control`` (mailstorm.fake_esp.client.ControlClient), ``ledger`` (mailstorm.ledger.LedgerReader) and
``ledger_dir``, and ``messages(**filters)`` (what the ESP received: GET /messages of the control API),
and stops the process afterwards. Options go through ``@pytest.mark.fake_esp(...)``
with EspProcess's keyword arguments (seed, faults, processes, max_message_size, ...). With
``tls="starttls"`` (or ``"implicit"``) and ``auth=["user:password"]`` it requires what production ESPs
do, and ``ca_path`` is the CA file your code must trust:

    @pytest.mark.fake_esp(tls="starttls", require_tls=True, auth=["apikey:SG.test"])
    def test_my_sender_uses_tls(fake_esp):
        my_code.send(port=fake_esp.smtp_port, cafile=fake_esp.ca_path, user="apikey", password="SG.test")
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailstorm.fake_esp.client import ControlClient
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import LedgerReader


@dataclass
class FakeEsp:
    smtp_host: str
    smtp_port: int
    http_url: str | None
    control: ControlClient
    ledger: LedgerReader
    ledger_dir: Path
    process: EspProcess
    ca_path: Path | None = None  # the CA to trust when the ESP speaks TLS

    def messages(self, **query: Any) -> list[dict[str, Any]]:
        """What the ESP received, newest first: ``fake_esp.messages(rcpt="a@b.test")``; filters and the
        long poll as ControlClient.messages (``min=2, timeout=5`` waits for two)."""
        return self.control.messages(**query)["messages"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fake_esp(**kwargs): options for the fake_esp fixture (EspProcess args)"
    )


@pytest.fixture
def fake_esp(request: pytest.FixtureRequest, tmp_path: Path):
    marker = request.node.get_closest_marker("fake_esp")
    options = dict(marker.kwargs) if marker is not None else {}
    ledger_dir = tmp_path / "esp-ledger"
    options.setdefault("log_path", tmp_path / "fake-esp.log")
    with EspProcess(ledger_dir, **options) as esp:
        yield FakeEsp(
            smtp_host=esp.smtp_host,
            smtp_port=esp.smtp_port,
            http_url=esp.http_url,
            control=esp.control,
            ledger=LedgerReader(ledger_dir),
            ledger_dir=ledger_dir,
            process=esp,
            ca_path=esp.ca_path if esp.tls != "off" else None,
        )
