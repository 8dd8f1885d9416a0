"""The shipped pytest plugin: the ``fake_esp`` fixture a user tests their own mail code with."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from mailstorm.ledger import Kind
from tests.fake_esp.clients import message


def test_fixture_gives_address_control_and_ledger(fake_esp):
    """The fixture's ESP accepts mail at smtp_host:smtp_port and the ledger reader sees it."""
    with smtplib.SMTP(fake_esp.smtp_host, fake_esp.smtp_port, timeout=10) as s:
        s.sendmail("app@sender.test", ["user@rcpt.test"], message("plugin-1"))
    (rec,) = fake_esp.ledger.records([Kind.ESP_ACCEPTED])
    assert rec["id"] == "plugin-1" and rec["acked"] is True
    assert fake_esp.ledger_dir.is_dir() and fake_esp.http_url is None


@pytest.mark.fake_esp(seed=3, faults=[{"type": "reply", "phase": "rcpt", "reply": "550 5.1.1 No such user"}])
def test_marker_passes_options(fake_esp):
    """Faults given through the marker are installed before the test starts."""
    with smtplib.SMTP(fake_esp.smtp_host, fake_esp.smtp_port, timeout=10) as s:
        s.ehlo("c.test")
        s.mail("app@sender.test")
        assert s.rcpt("user@rcpt.test")[0] == 550
    assert [f["spec"]["type"] for f in fake_esp.control.faults()] == ["reply"]


@pytest.mark.fake_esp(tls="starttls", require_tls=True, auth=["apikey:SG.plugin"])
def test_marker_gives_a_tls_and_auth_esp_and_its_ca(fake_esp):
    """tls/require_tls/auth through the marker: the fixture names the CA to trust, and a client that
    trusts it, does STARTTLS and logs in is served; the ledger names the user."""
    ctx = ssl.create_default_context(cafile=str(fake_esp.ca_path))
    with smtplib.SMTP(fake_esp.smtp_host, fake_esp.smtp_port, timeout=10) as s:
        s.starttls(context=ctx)
        s.login("apikey", "SG.plugin")
        s.sendmail("app@sender.test", ["user@rcpt.test"], message("plugin-tls"))
    (rec,) = fake_esp.ledger.records([Kind.ESP_ACCEPTED])
    assert (rec["id"], rec["key"]) == ("plugin-tls", "apikey")
