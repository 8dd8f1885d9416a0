"""The run's ESPs (harness/esp_fleet.py), real fake ESP processes: several by name, each its own ports,
ledger files and CA, the bundle the SUT trusts for all of them, a crash and a restart by name."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailstorm.errors import PartDied
from mailstorm.harness.chaosproxy.proxy import ChaosProxy
from mailstorm.harness.esp_fleet import EspFleet
from mailstorm.harness.scenario import NamedEsp
from mailstorm.ledger import Kind, LedgerReader


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
        relays = fleet.relays()
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


def _plain(address: tuple[str, int]) -> bool:
    """One plain SMTP message to ``address``: True when accepted, False when the connection was cut."""
    try:
        with smtplib.SMTP(*address, timeout=10) as s:
            s.sendmail("a@b.test", ["c@d.test"], b"Subject: x\r\n\r\nhi\r\n")
        return True
    except (smtplib.SMTPException, ConnectionError):
        return False


def test_the_chaos_proxy_fronts_every_esp_and_a_toxic_can_name_one(tmp_path):
    """Two ESPs (the first with HTTP APIs): the proxy has a front per ESP path, the SUT's relays go through
    them in order and reach each ESP; a reset toxic for the secondary cuts its front alone, one naming no
    ESP cuts both, and ``on: [http]`` leaves SMTP alone."""
    specs = (NamedEsp(name="primary", http_port=0), NamedEsp(name="secondary"))
    fleet = EspFleet(
        specs,
        seed=lambda part: len(part),
        run_dir=tmp_path,
        ledger_dir=tmp_path / "ledger",
        logs_dir=tmp_path / "logs",
    )
    paths = fleet.proxy_paths()
    assert set(paths) == {"smtp@primary", "http@primary", "smtp@secondary"}
    proxy = ChaosProxy(paths).start()
    try:
        fleet.start()
        relays = fleet.relays(proxy)
        assert relays == (proxy.address("smtp@primary"), proxy.address("smtp@secondary"))
        assert [_plain(r) for r in relays] == [True, True]
        for name in ("primary", "secondary"):
            records = LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])
            assert sum(1 for r in records if r["src"].startswith(f"esp-{name}")) == 1
        cut = proxy.add_toxic({"type": "reset", "name": "cut"}, esp="secondary")
        assert proxy.toxics()[0]["esp"] == "secondary"
        assert [_plain(r) for r in relays] == [True, False]
        proxy.remove_toxic(cut)
        proxy.add_toxic({"type": "reset", "name": "http-only", "on": ["http"]})
        assert [_plain(r) for r in relays] == [True, True]
        proxy.add_toxic({"type": "reset", "name": "all"})
        assert [_plain(r) for r in relays] == [False, False]
    finally:
        proxy.stop()
        fleet.stop()


def test_a_fleet_of_one_keeps_the_plain_proxy_paths(tmp_path):
    """One ESP: the proxy's paths are ``smtp`` (and ``http``), as before there were several."""
    fleet = EspFleet(
        (NamedEsp(name="only", http_port=0),),
        seed=lambda part: 0,
        run_dir=tmp_path,
        ledger_dir=tmp_path / "ledger",
        logs_dir=tmp_path / "logs",
    )
    assert set(fleet.proxy_paths()) == {"smtp", "http"}
    assert fleet.path("smtp") == "smtp"
