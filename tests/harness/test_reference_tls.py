"""The reference pipeline relaying to a fake ESP that requires TLS and AUTH, as production ESPs do: STARTTLS
or implicit TLS trusting the run's CA, AUTH with the ESP's credential, https for the HTTP relay; an AUTH
refusal or a failed handshake defers (the message is retried, not bounced). Then `mailstorm run` with
the ESP's TLS and AUTH in the scenario: the CA is written to <run>/esp/ca.pem, named in run.json and
printed at start, and the default target relays through it with nothing lost."""

from __future__ import annotations

import json

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.targets.base import EspSecurity, TargetContext
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port
from tests.harness.test_reference_esp import submit, wait_until
from tests.harness.test_run import Ledgers, assert_complete, run, scenario_file

USER, PASSWORD = "relay-user", "relay-Passw0rd"


@pytest.fixture(params=["starttls", "implicit"])
def secured(request, tmp_path):
    """A fake ESP requiring TLS (this mode) and AUTH, with HTTP APIs (https), and a start(**spec) for the
    reference target configured from the ESP's security as a run configures it."""
    ledger_dir = tmp_path / "run" / "ledger"
    esp = EspProcess(
        ledger_dir,
        seed=5,
        http_port=free_port(),
        log_path=tmp_path / "esp.log",
        tls=request.param,
        require_tls=True,
        auth=[f"{USER}:{PASSWORD}"],
    ).start()
    targets: list[ReferenceTarget] = []
    security = EspSecurity(
        tls=request.param, ca=esp.ca_path, require_tls=True, credentials=((USER, PASSWORD),)
    )

    def start(**spec) -> int:
        target = ReferenceTarget(ReferenceTargetSpec(**spec))
        targets.append(target)
        ctx = TargetContext(
            run_dir=tmp_path / "run",
            ledger_dir=ledger_dir,
            seed=3,
            esp_smtp=(esp.smtp_host, esp.smtp_port),
            esp_http=esp.http_url,
            esp_security=security,
        )
        (endpoint,) = target.start(ctx)
        return endpoint.port

    try:
        yield esp, start, LedgerReader(ledger_dir)
    finally:
        for target in targets:
            target.stop()
        esp.stop()
    assert "Traceback" not in esp.log_path.read_text()


@pytest.mark.parametrize("relay", ["smtp", "http"])
def test_reference_relays_over_tls_with_auth(secured, relay):
    """Every message reaches the ESP once, over TLS (smtp) or https (http), under the credential's name."""
    esp, start, reader = secured
    port = start(relay=relay, concurrency=2, backoff_base_s=0.05, backoff_max_s=0.2)
    ids = [f"sec-{relay}-{i}" for i in range(20)]
    submit(port, ids)
    wait_until(lambda: {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])} >= set(ids), 30, "delivery")
    kept = [r for r in reader.records([Kind.ESP_ACCEPTED]) if r["id"] in ids]
    assert len(kept) == len(ids) and {r["key"] for r in kept} == {USER}
    if relay == "smtp":
        assert {r["tls"] for r in kept} <= {"TLSv1.2", "TLSv1.3"}
    assert PASSWORD not in "".join(p.read_text() for p in esp.ledger_dir.glob("*.jsonl"))


def deferred(reader: LedgerReader, code: int | None) -> list[dict]:
    return [r for r in reader.records([Kind.SUT_DEFERRED]) if r["code"] == code]


def test_an_auth_refusal_defers_and_the_retry_delivers(secured):
    """While the ESP answers AUTH 535, the relay defers (sut.deferred with the 535); once the fault is
    gone it delivers each message exactly once; nothing bounces."""
    esp, start, reader = secured
    esp.control.add_fault({"name": "auth-535", "type": "reply", "phase": "auth", "reply": "535 5.7.8 Nope"})
    port = start(concurrency=1, backoff_base_s=0.1, backoff_max_s=0.3)
    ids = [f"auth-{i}" for i in range(5)]
    submit(port, ids)
    wait_until(lambda: deferred(reader, 535), 30, "a deferral at AUTH")
    esp.control.remove_fault("auth-535")
    wait_until(lambda: {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])} >= set(ids), 30, "delivery")
    assert list(reader.records([Kind.SUT_BOUNCED])) == []
    assert sorted(r["id"] for r in reader.records([Kind.ESP_ACCEPTED])) == sorted(ids)


def test_a_failed_handshake_defers_and_the_retry_delivers(secured):
    """A handshake_failure fault: the relay's TLS set-up fails and the message waits (deferred, no reply
    code); once the fault is gone it goes, once."""
    esp, start, reader = secured
    esp.control.add_fault({"name": "hs", "type": "tls", "mode": "handshake_failure"})
    port = start(concurrency=1, backoff_base_s=0.1, backoff_max_s=0.3)
    submit(port, ["hs-0", "hs-1"])
    wait_until(lambda: deferred(reader, None), 30, "a deferral at the handshake")
    esp.control.remove_fault("hs")
    wait_until(
        lambda: {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])} >= {"hs-0", "hs-1"}, 30, "delivery"
    )
    assert list(reader.records([Kind.SUT_BOUNCED])) == []


def test_mailstorm_run_with_tls_and_auth_required(tmp_path):
    """`mailstorm run` with esp tls/require_tls/auth: the CA is at <run>/esp/ca.pem, named in run.json and
    printed at start; the reference pipeline relays through TLS and AUTH; nothing is lost, exit 0."""
    body = (
        f'esp:\n  tls: starttls\n  require_tls: true\n  auth: ["{USER}:{PASSWORD}"]\nslo: {{max_lost: 0}}\n'
    )
    path = scenario_file(tmp_path, "tls-run", body, duration="6s", rate=20)
    code, run_dir, err = run(path, tmp_path)
    assert code == 0, err
    ca = run_dir / "esp" / "ca.pem"
    assert ca.is_file() and f"CA certificate {ca}" in err
    info = json.loads((run_dir / "run.json").read_text())
    assert info["esp_ca"] == str(ca) and info["esp"]["tls"] == "starttls"
    ledgers = Ledgers(run_dir)
    assert_complete(run_dir, ledgers)
    assert not ledgers.lost
    kept = list(LedgerReader(run_dir / "ledger").records([Kind.ESP_ACCEPTED]))
    assert kept and {r["key"] for r in kept} == {USER} and all(r["tls"] for r in kept)
