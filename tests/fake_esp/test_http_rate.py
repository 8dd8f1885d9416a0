"""A profile's rate limit holds under load: 3x the limit offered for 10 s, accepted within 10% of it.

``mailstorm esp --profile ses --rate 14``: over the SES API the excess gets 429
TooManyRequestsException, over SMTP "454 4.7.0 Throttling failure: Maximum sending rate exceeded".
The load is open-loop (each send has its scheduled time, i / offered rate), bounded in count and time.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port
from mailstorm.replies import SES_THROTTLED

RATE = 14.0
OFFERED = 3 * RATE
SECONDS = 10.0
SES_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDRATE/20260101/us-east-1/ses/aws4_request, "
    "SignedHeaders=host, Signature=0"
)
SES_BODY = {
    "FromEmailAddress": "app@example.test",
    "Destination": {"ToAddresses": ["user@example.test"]},
    "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
}


@pytest.fixture
def ses_esp(tmp_path):
    with EspProcess(
        tmp_path / "ledger",
        http_port=free_port(),
        profile="ses",
        extra_args=["--rate", str(RATE)],
        log_path=tmp_path / "esp.log",
    ) as proc:
        yield proc


def accepted_rate(esp: EspProcess, proto: str) -> float:
    n = sum(1 for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r["proto"] == proto)
    return n / SECONDS


def paced(total: int, workers: int, send) -> Counter:
    """Call ``send(i)`` for i < total, each at t0 + i / OFFERED (open loop), on ``workers`` threads."""
    results: Counter = Counter()
    lock = threading.Lock()
    t0 = time.monotonic() + 0.2

    def one(i: int) -> None:
        delay = t0 + i / OFFERED - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the open-loop schedule: this send's intended time
        outcome = send(i)
        with lock:
            results[outcome] += 1

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(total)))
    return results


def test_ses_rate_limit_holds_over_http(ses_esp):
    """42 requests/s for 10 s at an SES profile limited to 14/s: accepted 14/s +-10%, the rest 429."""
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=24))
    headers = {"Authorization": SES_AUTH, "Content-Type": "application/json"}
    url = ses_esp.http_url + "/v2/email/outbound-emails"

    def send(i: int) -> tuple[int, str]:
        r = session.post(url, json=SES_BODY, headers=headers, timeout=10)
        return r.status_code, r.headers.get("x-amzn-ErrorType", "")

    results = paced(int(OFFERED * SECONDS), 24, send)
    assert set(results) <= {(200, ""), (429, "TooManyRequestsException")}
    assert results[(429, "TooManyRequestsException")] > 0
    assert accepted_rate(ses_esp, "http") == pytest.approx(RATE, rel=0.10)


def test_ses_rate_limit_holds_over_smtp(ses_esp):
    """42 messages/s for 10 s over SMTP (12 connections): accepted 14/s +-10%, the rest get SES's 454."""
    local = threading.local()
    clients: list[smtplib.SMTP] = []

    def send(i: int) -> str:
        if getattr(local, "smtp", None) is None:
            local.smtp = smtplib.SMTP(ses_esp.smtp_host, ses_esp.smtp_port, timeout=10)
            clients.append(local.smtp)
        try:
            local.smtp.sendmail("app@example.test", ["user@example.test"], f"Subject: {i}\r\n\r\nbody\r\n")
            return "250"
        except smtplib.SMTPDataError as exc:
            return f"{exc.smtp_code} {exc.smtp_error.decode()}"

    try:
        results = paced(int(OFFERED * SECONDS), 12, send)
    finally:
        for client in clients:
            client.quit()
    assert set(results) <= {"250", f"{SES_THROTTLED.code} {SES_THROTTLED.status} {SES_THROTTLED.text}"}
    assert results["250"] < OFFERED * SECONDS / 2
    assert accepted_rate(ses_esp, "smtp") == pytest.approx(RATE, rel=0.10)
