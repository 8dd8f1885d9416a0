"""The control API: TTL, reset, replace/remove, counters and metrics, 400s naming the field, token rules."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from mailstorm.errors import ConfigError, UserError
from mailstorm.fake_esp.client import ControlClient
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ports import free_port
from tests.fake_esp.clients import smtp_transaction, wait_until


def raw(url: str, method: str = "GET", body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_fault_with_ttl_reverts_after_it(esp):
    """A fault added with a 2 s TTL acts at once and is gone (listed nowhere, acting nowhere) after 2 s."""
    t0 = time.monotonic()
    esp.control.add_fault({"type": "reply", "phase": "mail", "reply": "451 4.3.0 x", "ttl": 2})
    assert smtp_transaction(esp.port, "ttl-1").codes["mail"] == 451
    wait_until(lambda: not esp.control.faults(), timeout=4, what="the TTL to expire")
    assert time.monotonic() - t0 >= 1.9
    assert smtp_transaction(esp.port, "ttl-2").codes["eod"] == 250


def test_reset_clears_all(esp):
    """Reset removes every fault; the next transaction goes through untouched."""
    for phase in ("ehlo", "mail", "rcpt"):
        esp.control.add_fault({"type": "reply", "phase": phase, "reply": "554 5.7.1 no"})
    assert len(esp.control.faults()) == 3
    esp.control.reset()
    assert esp.control.faults() == []
    assert smtp_transaction(esp.port, "reset-1").codes["eod"] == 250


def test_replace_remove_and_duplicate_names(esp):
    """PUT replaces a fault under its id, POST of an existing name is refused, DELETE removes it."""
    fid = esp.control.add_fault({"name": "slow", "type": "reply", "phase": "mail", "reply": "451 4.3.0 x"})
    assert fid == "slow"
    status, _ = raw(
        esp.proc.control_url + "/faults", "POST", {"name": "slow", "type": "disconnect", "phase": "rcpt"}
    )
    assert status == 409
    esp.control.replace_fault("slow", {"type": "reply", "phase": "rcpt", "reply": "550 5.1.1 gone"})
    assert smtp_transaction(esp.port, "rep-1").codes["rcpt"] == 550
    esp.control.remove_fault("slow")
    assert esp.control.faults() == []
    with pytest.raises(UserError, match="no fault"):
        esp.control.remove_fault("slow")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"type": "meltdown", "phase": "mail"}, "type"),
        ({"type": "reply", "phase": "mail", "reply": "451 4.3.0 x", "probability": 1.5}, "probability"),
        ({"type": "latency", "phase": "mail", "ms": -5}, "ms"),
        ({"type": "reply", "phase": "mail", "reply": "999 9.9.9 x"}, "reply"),
        ({"type": "reply", "phase": "mail", "reply": "250 2.0.0 fine"}, "reply"),
        ({"type": "reply", "phase": "lunch", "reply": "451 4.3.0 x"}, "phase"),
        ({"type": "throttle", "rate": 0}, "rate"),
        ({"type": "latency", "phase": "mail", "dist": "normal", "mean_ms": 5}, "sd_ms"),
    ],
)
def test_malformed_fault_gets_400_naming_the_field(esp, spec, field):
    """A malformed fault is refused with 400 and a one-line error that starts with the bad field."""
    status, body = raw(esp.proc.control_url + "/faults", "POST", spec)
    assert status == 400
    error = json.loads(body)["error"]
    assert error.startswith(f"{field}:") and "\n" not in error
    with pytest.raises(ConfigError, match=f"^{field}:"):
        esp.control.add_fault(spec)
    assert esp.control.faults() == []


def test_non_json_body_gets_400(esp):
    """A body that is not JSON gets a 400 saying so."""
    req = urllib.request.Request(esp.proc.control_url + "/faults", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400 and b"body" in err.value.read()


def test_counters_and_metrics(esp):
    """Counters count replies per code and decisions per fault; /metrics exposes the same numbers."""
    before = esp.control.counters()
    esp.control.add_fault({"name": "r", "type": "reply", "phase": "rcpt", "reply": "452 4.3.1 full"})
    smtp_transaction(esp.port, "cnt-1")
    after = esp.control.counters()
    assert after["replies"]["452"] == before["replies"].get("452", 0) + 1
    assert after["faults"]["r"] == before["faults"].get("r", 0) + 1
    assert after["sessions"] == before["sessions"] + 1
    status, text = raw(esp.proc.control_url + "/metrics")
    assert status == 200
    assert f'fake_esp_replies_total{{code="452"}} {float(after["replies"]["452"])}'.encode() in text
    assert b'fake_esp_faults_fired_total{fault="r"}' in text


def test_token_required_when_set(tmp_path):
    """With a token, a request without it (or with a wrong one) gets 401; with it, 200."""
    token = "s3cret-token"
    with EspProcess(tmp_path / "ledger", token=token, log_path=tmp_path / "esp.log") as esp:
        assert raw(esp.control_url + "/health")[0] == 401
        assert raw(esp.control_url + "/faults", "POST", {"type": "disconnect", "phase": "mail"})[0] == 401
        assert raw(esp.control_url + "/health", headers={"Authorization": "Bearer wrong-token"})[0] == 401
        assert raw(esp.control_url + "/health", headers={"Authorization": f"Bearer {token}"})[0] == 200
        with pytest.raises(UserError, match="token"):
            ControlClient(esp.control_url).faults()
        assert esp.control.faults() == []


def test_non_loopback_bind_without_token_is_refused(tmp_path):
    """Asked to listen on a non-loopback address without a token, the ESP refuses in one line (exit 2)."""
    cmd = [sys.executable, "-m", "mailstorm.fake_esp", "--bind", "0.0.0.0", "--ledger", str(tmp_path)]
    cmd += ["--smtp-port", str(free_port()), "--control-port", str(free_port())]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--bind 0.0.0.0" in lines[0] and "--token" in lines[0]
