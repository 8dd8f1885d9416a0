"""An ESP outage takes the whole ESP down: SMTP, the HTTP APIs and the webhook poster together (refuse:
connection refused on every port but control; hang: accepted, never answered), unless ``on`` narrows it."""

from __future__ import annotations

import time
import uuid

import pytest
import requests
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port
from tests.fake_esp.clients import smtp_transaction, wait_until
from tests.fake_esp.test_faults_smtp import refused
from tests.fake_esp.test_webhooks import Receiver, start_esp, webhook_records


def sendgrid_post(session: requests.Session, esp: EspProcess, cid: str) -> requests.Response:
    body = {
        "personalizations": [{"to": [{"email": "u@example.test"}], "custom_args": {CORRELATION_HEADER: cid}}],
        "from": {"email": "a@example.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "b"}],
    }
    auth = {"Authorization": "Bearer SG.k"}
    return session.post(f"{esp.http_url}/v3/mail/send", json=body, headers=auth, timeout=5)


@pytest.fixture
def http_esp(tmp_path, request):
    processes = getattr(request, "param", 1)
    with EspProcess(
        tmp_path / "ledger", http_port=free_port(), processes=processes, log_path=tmp_path / "esp.log"
    ) as esp:
        yield esp


@pytest.mark.parametrize("http_esp", [1, 2], indirect=True, ids=["one-process", "two-workers"])
def test_refuse_outage_refuses_smtp_and_http_and_cuts_kept_alive_connections(http_esp):
    """A refuse outage: the SMTP and HTTP ports refuse connections (every worker's), a kept-alive HTTP
    connection is reset and recorded as cut by the outage, the control API answers throughout; after it
    both protocols accept mail again."""
    esp = http_esp
    session = requests.Session()
    assert sendgrid_post(session, esp, "before").status_code == 202  # the connection is now kept alive
    esp.control.add_fault({"name": "down", "type": "outage", "duration_s": 2.0})
    wait_until(
        lambda: refused(esp.smtp_port) and refused(esp.http_port), timeout=3, what="both listeners closed"
    )
    assert esp.control.health()["ready"]
    with pytest.raises(requests.ConnectionError):
        sendgrid_post(session, esp, "during")
    wait_until(lambda: not refused(esp.http_port) and not refused(esp.smtp_port), timeout=5, what="the end")
    assert sendgrid_post(requests.Session(), esp, "after").status_code == 202
    assert smtp_transaction(esp.smtp_port, "after-smtp").codes["eod"] == 250
    reader = LedgerReader(esp.ledger_dir)
    cuts = [r for r in reader.records([Kind.ESP_REPLIED]) if r.get("fault") == "down"]
    assert any(r["proto"] == "http" and r["code"] is None for r in cuts)
    listener = [r for r in reader.records([Kind.ESP_FAULT]) if r.get("phase") == "listener"]
    assert {(r["proto"], r["state"]) for r in listener} == {
        (p, s) for p in ("smtp", "http") for s in ("begin", "end")
    }
    kept = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])}
    assert "during" not in kept and {"before", "after", "after-smtp"} <= kept


@pytest.mark.parametrize("on,down,up", [("http", "http", "smtp"), ("smtp", "smtp", "http")])
def test_on_narrows_an_outage_to_one_protocol(http_esp, on, down, up):
    """``on: [http]`` refuses the HTTP APIs while SMTP takes mail, and ``on: [smtp]`` the other way."""
    esp = http_esp
    port = {"smtp": esp.smtp_port, "http": esp.http_port}
    esp.control.add_fault({"type": "outage", "duration_s": 1.5, "on": [on]})
    wait_until(lambda: refused(port[down]), timeout=3, what=f"the {down} listener to close")
    if up == "smtp":
        assert smtp_transaction(esp.smtp_port, "still-up").codes["eod"] == 250
    else:
        assert sendgrid_post(requests.Session(), esp, "still-up").status_code == 202
    assert not refused(port[up])
    wait_until(lambda: not refused(port[down]), timeout=5, what=f"the {down} listener to reopen")


def test_hang_outage_accepts_http_requests_and_never_answers(http_esp):
    """A hang outage without any phase named: the official SendGrid SDK's request is accepted and gets no
    answer until its timeout; SMTP hangs too."""
    esp = http_esp
    esp.control.add_fault({"name": "silent", "type": "outage", "duration_s": 3, "mode": "hang"})
    wait_until(lambda: esp.control.faults(), what="the fault to be listed")
    mail = Mail(from_email="a@example.test", to_emails="u@example.test", subject="s", plain_text_content="b")
    mail.custom_arg = CustomArg(CORRELATION_HEADER, "hung")
    began = time.monotonic()
    with pytest.raises((TimeoutError, OSError)):
        SendGridAPIClient("SG.k", host=esp.http_url).client.mail.send.post(
            request_body=mail.get(), timeout=0.5
        )
    assert time.monotonic() - began >= 0.45
    assert smtp_transaction(esp.smtp_port, "hung-smtp", timeout=0.5).cut_at == "connect"
    hangs = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_FAULT]) if r.get("action") == "hang"]
    assert {r.get("proto", "smtp") for r in hangs if r["fault"] == "silent"} >= {"http"}


def test_an_outage_holds_webhook_posts_until_it_ends(tmp_path):
    """``on: [webhooks]``: the APIs still accept mail, but no event is posted while the outage lasts
    (each held POST is recorded, naming the outage); when it ends every event arrives."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            esp.control.add_fault({"name": "quiet", "type": "outage", "duration_s": 1.5, "on": ["webhooks"]})
            wait_until(lambda: esp.control.faults(), what="the fault to be listed")
            ids = [f"held-{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
            session = requests.Session()
            for cid in ids:
                assert sendgrid_post(session, esp, cid).status_code == 202
            sent = time.time_ns()
            time.sleep(0.5)  # the outage is under test: nothing may arrive inside it
            assert rx.events() == []
            wait_until(lambda: len(rx.events()) >= len(ids), timeout=10, what="the held events")
            holds = [
                r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_FAULT]) if r["phase"] == "webhook"
            ]
            posts = webhook_records(esp)
        finally:
            esp.stop()
    assert sorted(e["id"] for e in rx.events()) == sorted(ids)
    assert holds and all(r["fault"] == "quiet" and r["action"] == "hold" for r in holds)
    assert all(r["t"] > sent + 0.5e9 for r in posts)  # every attempt after the hold, none refused
