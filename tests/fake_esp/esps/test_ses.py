"""Amazon SES: the official SDK (boto3 sesv2) and plain HTTP against the fake's SES v2 API, its 429 and
5xx answers, its 400s, its events through SNS, and the ses profile's rate limit holding under load over
HTTP and SMTP (``mailstorm esp --profile ses --rate 14``: 3x the limit offered for 10 s, accepted within
10% of it; the excess gets 429 TooManyRequestsException over the API and "454 4.7.0 Throttling failure:
Maximum sending rate exceeded" over SMTP). The load is open-loop (each send has its scheduled time,
i / offered rate), bounded in count and time.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port
from mailstorm.replies import SES_THROTTLED
from tests.fake_esp.http_support import (
    THROTTLE,
    accepted,
    assert_delivered_once,
    kept,
    new_id,
    post,
    replies,
    reply_fault,
)

SES = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/ses/aws4_request, "
    "SignedHeaders=host, Signature=00",
    "Content-Type": "application/json",
}
ROUTES = [("/v2/email/outbound-emails", SES)]


def ses_client(esp: EspProcess, key: str = "AKIDTESTKEY"):
    return boto3.client(
        "sesv2",
        endpoint_url=esp.http_url,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key="secret",
        config=Config(retries={"total_max_attempts": 1}),  # one attempt: the test sees the first answer
    )


def ses_send(esp: EspProcess, cid: str, key: str = "AKIDTESTKEY"):
    content = {
        "Simple": {
            "Subject": {"Data": "s"},
            "Body": {"Text": {"Data": "b"}},
            "Headers": [{"Name": CORRELATION_HEADER, "Value": cid}],
        }
    }
    return ses_client(esp, key).send_email(
        FromEmailAddress="app@example.test",
        Destination={"ToAddresses": ["user@example.test"]},
        Content=content,
    )


SES_AUTH = "AWS4-HMAC-SHA256 Credential=AKIDWH/20260101/us-east-1/ses/aws4_request, SignedHeaders=host"


def send_plain(url: str, cid: str) -> None:
    """One message over plain HTTP, the correlation id as the mailstorm_id email tag."""
    body = {
        "FromEmailAddress": "a@example.test",
        "Destination": {"ToAddresses": ["u@example.test"]},
        "Content": {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
        "EmailTags": [{"Name": "mailstorm_id", "Value": cid}],
    }
    r = requests.post(f"{url}/v2/email/outbound-emails", json=body, headers={"Authorization": SES_AUTH})
    assert r.status_code == 200, r.text


def test_ses_send_is_accepted_and_in_the_ledger(esp):
    """SES v2 (boto3): the MessageId answered is the ledger's esp_id; the id came from Simple.Headers."""
    cid = new_id()
    out = ses_send(esp, cid)
    (rec,) = accepted(esp, cid)
    assert (rec["api"], rec["key"], rec["esp_id"]) == ("ses", "AKIDTESTKEY", out["MessageId"])


def test_ses_raw_mime_send_carries_the_header_and_message_id(esp):
    """SES v2 Raw content: the correlation header and Message-ID are read from the MIME message itself."""
    cid = new_id()
    raw = (
        f"From: app@example.test\r\nTo: user@example.test\r\n{CORRELATION_HEADER}: {cid}\r\n"
        f"Message-ID: <{cid}@example.test>\r\nSubject: s\r\n\r\nbody\r\n"
    ).encode()
    ses_client(esp).send_email(Content={"Raw": {"Data": raw}})
    (rec,) = accepted(esp, cid)
    assert rec["mid"] == f"<{cid}@example.test>" and rec["size"] == len(raw)


def test_ses_429_from_the_throttle(esp):
    """SES: boto3 raises its modeled TooManyRequestsException with HTTP status 429."""
    esp.control.add_fault(THROTTLE)
    ses_send(esp, new_id())
    client = ses_client(esp)
    with pytest.raises(client.exceptions.TooManyRequestsException) as err:
        client.send_email(
            FromEmailAddress="a@example.test",
            Destination={"ToAddresses": ["b@example.test"]},
            Content={"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}}},
        )
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429


@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_the_sdk(esp, status):
    """A reply fault on phase http reaches boto3 as a ClientError with that status and SES's error code
    (InternalFailure / ServiceUnavailable); nothing is kept."""
    before, answered = kept(esp), replies(esp, "ses", status)
    esp.control.add_fault(reply_fault(status))
    with pytest.raises(ClientError) as err:
        ses_send(esp, new_id())
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert err.value.response["Error"]["Code"] == (
        "InternalFailure" if status == 500 else "ServiceUnavailable"
    )
    assert kept(esp) == before and replies(esp, "ses", status) == answered + 1


def test_ses_malformed_json_and_missing_fields(esp):
    """SES: 400 with x-amzn-ErrorType (SerializationException / BadRequestException) and {"message"}."""
    r = post(esp, "/v2/email/outbound-emails", SES, data=b"{not json")
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "SerializationException"
    r = post(esp, "/v2/email/outbound-emails", SES, json={"FromEmailAddress": "a@b.test"})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "BadRequestException"
    assert "content" in r.json()["message"]
    raw = {"Content": {"Raw": {"Data": "%%% not base64"}}}
    r = post(esp, "/v2/email/outbound-emails", SES, json=raw)
    assert r.status_code == 400 and "Raw.Data" in r.json()["message"]
    r = post(esp, "/v2/email/outbound-emails", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 403


def test_each_accepted_message_is_delivered_once_as_an_ses_event(tmp_path):
    """Five messages: exactly one delivered event each, as an SNS notification whose Message is the SES
    event JSON, carrying the correlation id and the ESP's message id from the ledger."""
    events = assert_delivered_once(tmp_path, "ses", send_plain)
    assert all(e["raw"]["Type"] == "Notification" for e in events)


# -- the ses profile's rate limit under load -----------------------------------------------------------

RATE = 14.0
OFFERED = 3 * RATE
SECONDS = 10.0
SES_RATE_AUTH = (
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
    headers = {"Authorization": SES_RATE_AUTH, "Content-Type": "application/json"}
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
