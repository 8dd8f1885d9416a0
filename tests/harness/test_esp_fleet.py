"""The run's ESPs (harness/esp_fleet.py), real fake ESP processes: several by name, each its own ports,
ledger files and CA, the bundle the SUT trusts for all of them, a crash and a restart by name."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailstorm.errors import PartDied
from mailstorm.harness.esp_fleet import EspFleet
from mailstorm.harness.scenario import NamedEsp


def _fleet(tmp_path) -> EspFleet:
    specs = tuple(
        NamedEsp(name=n, tls="starttls", hostname="esp.mailstorm.test") for n in ("primary", "secondary")
    )
    return EspFleet(
        specs,
        seed=lambda part: len(part),
        run_dir=tmp_path,
        ledger_dir=tmp_path / "ledger",
        logs_dir=tmp_path / "logs",
    )


def _send(host: str, port: int, ca: str) -> None:
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False  # loopback by address; the chain is what is checked here
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.starttls(context=context)
        s.sendmail("a@b.test", ["c@d.test"], b"Message-ID: <f@x.test>\r\nSubject: x\r\n\r\nhi\r\n")


def test_several_esps_each_their_own_and_one_ca_bundle(tmp_path):
    fleet = _fleet(tmp_path)
    try:
        fleet.start()
        bundle = tmp_path / "esp" / "ca.pem"
        assert bundle.read_bytes().count(b"BEGIN CERTIFICATE") == 2
        relays = fleet.relays(("127.0.0.1", fleet.ports["primary"][0]))
        assert [port for _, port in relays] == [
            fleet.processes[n].smtp_port for n in ("primary", "secondary")
        ]
        for host, port in relays:
            _send(host, port, str(bundle))  # the one bundle verifies every ESP's certificate
        assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == [
            "esp-primary-smtp-0.jsonl",
            "esp-secondary-smtp-0.jsonl",
        ]
        assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
            "esp-primary.log",
            "esp-secondary.log",
        ]
        old = fleet.processes["secondary"].pid
        assert "secondary" in fleet.crash("secondary")
        fleet.check(down=["secondary"])  # taken down on purpose: not a death
        with pytest.raises(PartDied, match="fake ESP secondary died"):
            fleet.check()
        fleet.restart("secondary")
        assert fleet.processes["secondary"].pid != old
        fleet.check()
        assert fleet.info("secondary").name == "secondary"
    finally:
        fleet.stop()
