"""The official ESP SDKs (sendgrid, boto3 sesv2, mailgun, postmarker) against the fake ESP's HTTP APIs.

One fake ESP process for the module (HTTP APIs on a free port, no profile, so no added latency); each
test installs its faults through the control API and the fixture resets them.
"""

from __future__ import annotations

import uuid

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError
from mailgun.client import Client as MailgunClient
from mailgun.config import RetryPolicy
from postmarker.core import PostmarkClient
from postmarker.exceptions import ClientError as PostmarkError
from python_http_client.exceptions import InternalServerError, ServiceUnavailableError, TooManyRequestsError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port

DOMAIN = "mg.example.test"


@pytest.fixture(scope="module")
def esp_http(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp-http")
    with EspProcess(d / "ledger", http_port=free_port(), seed=3, log_path=d / "esp.log") as proc:
        yield proc


@pytest.fixture
def esp(esp_http: EspProcess):
    esp_http.control.reset()
    yield esp_http
    esp_http.control.reset()


def accepted(esp: EspProcess, cid: str) -> list[dict]:
    return [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r.get("id") == cid]


def new_id() -> str:
    return f"run-sdk-{uuid.uuid4().hex[:12]}"


# -- one send per SDK, returning the SDK's own answer ------------------------------------------------------
def sendgrid_send(esp: EspProcess, cid: str, key: str = "SG.test-key"):
    mail = Mail(
        from_email="app@example.test", to_emails="user@example.test", subject="s", plain_text_content="b"
    )
    mail.custom_arg = CustomArg(CORRELATION_HEADER, cid)
    return SendGridAPIClient(key, host=esp.http_url).send(mail)


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


def mailgun_send(esp: EspProcess, cid: str, key: str = "mg-key", retries: int = 0):
    client = MailgunClient(
        auth=("api", key), api_url=esp.http_url, retry_policy=RetryPolicy(max_retries=retries)
    )
    data = {"from": "app@example.test", "to": "user@example.test", "subject": "s", "text": "b"}
    return client.messages.create(data={**data, f"h:{CORRELATION_HEADER}": cid}, domain=DOMAIN)


def postmark_send(esp: EspProcess, cid: str, key: str = "pm-token"):
    client = PostmarkClient(server_token=key, root_api_url=esp.http_url)
    return client.emails.send(
        From="app@example.test",
        To="user@example.test",
        Subject="s",
        TextBody="b",
        Metadata={"mailstorm_id": cid},
    )


# -- accepted, with the correlation id in the ledger -----------------------------------------------------
def test_sendgrid_send_is_accepted_and_in_the_ledger(esp):
    """SendGrid: 202 with X-Message-Id; the ledger has the message with its custom_args correlation id,
    and the key's fingerprint (never the key itself)."""
    cid = new_id()
    resp = sendgrid_send(esp, cid)
    assert resp.status_code == 202
    (rec,) = accepted(esp, cid)
    assert (rec["proto"], rec["api"], rec["key"], rec["esp_id"]) == (
        "http", "sendgrid", fingerprint("SG.test-key"), resp.headers["X-Message-Id"],
    )  # fmt: skip


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


def test_mailgun_send_is_accepted_and_in_the_ledger(esp):
    """Mailgun: 200 {"id", "message": "Queued. Thank you."}; the id came from the h: header field."""
    cid = new_id()
    resp = mailgun_send(esp, cid)
    assert resp.status_code == 200 and resp.json()["message"] == "Queued. Thank you."
    (rec,) = accepted(esp, cid)
    assert resp.json()["id"] == f"<{rec['esp_id']}@{DOMAIN}>" and rec["key"] == fingerprint("mg-key")


def test_postmark_send_is_accepted_and_in_the_ledger(esp):
    """Postmark: ErrorCode 0 and a MessageID; the id came from Metadata."""
    cid = new_id()
    out = postmark_send(esp, cid)
    assert out["ErrorCode"] == 0 and out["Message"] == "OK"
    (rec,) = accepted(esp, cid)
    assert rec["esp_id"] == out["MessageID"] and rec["api"] == "postmark"


def test_postmark_batch_accepts_each_message(esp):
    """Postmark /email/batch: one answer and one ledger record per message, each with its own id."""
    ids = [new_id() for _ in range(3)]
    client = PostmarkClient(server_token="pm-token", root_api_url=esp.http_url)
    out = client.emails.send_batch(
        *[
            {
                "From": "a@example.test",
                "To": "b@example.test",
                "TextBody": "b",
                "Metadata": {"mailstorm_id": i},
            }
            for i in ids
        ]
    )
    assert [o["ErrorCode"] for o in out] == [0, 0, 0]
    assert [accepted(esp, i)[0]["esp_id"] for i in ids] == [o["MessageID"] for o in out]


# -- a throttling 429 as each SDK's own error ------------------------------------------------------------
THROTTLE = {"name": "t", "type": "throttle", "phase": "http", "rate": 0.05, "burst": 1, "key": "api_key"}


def test_sendgrid_429_from_the_throttle(esp):
    """SendGrid: the second send in the bucket's window is TooManyRequestsError with X-RateLimit-* headers."""
    esp.control.add_fault({**THROTTLE, "reply": "429 too many requests"})
    sendgrid_send(esp, new_id())
    with pytest.raises(TooManyRequestsError) as err:
        sendgrid_send(esp, new_id())
    assert err.value.status_code == 429
    headers = err.value.headers
    assert headers["X-RateLimit-Limit"] == "1" and headers["X-RateLimit-Remaining"] == "0"
    assert int(headers["Retry-After"]) >= 1 and int(headers["X-RateLimit-Reset"]) > 0
    sendgrid_send(esp, new_id(), key="SG.other-key")  # a bucket per API key: another key still passes


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


def test_mailgun_429_from_the_throttle_and_the_sdk_honours_retry_after(esp):
    """Mailgun: the SDK returns the 429 (it does not raise on HTTP status); with retries on, it waits
    the Retry-After the fake sent and the retry is accepted once the bucket has refilled."""
    esp.control.add_fault({**THROTTLE, "rate": 1.0})
    mailgun_send(esp, new_id())
    resp = mailgun_send(esp, new_id())
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1"
    assert resp.json() == {"message": "Throttling failure: Maximum sending rate exceeded"}
    cid = new_id()
    assert mailgun_send(esp, cid, retries=2).status_code == 200
    assert len(accepted(esp, cid)) == 1


def test_postmark_429_from_the_throttle(esp):
    """Postmark: postmarker raises ClientError with ErrorCode 429 over an HTTP 429."""
    esp.control.add_fault(THROTTLE)
    postmark_send(esp, new_id())
    with pytest.raises(PostmarkError) as err:
        postmark_send(esp, new_id())
    assert err.value.error_code == 429
    assert err.value.__cause__.response.status_code == 429


# -- injected 500 / 503 --------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503])
def test_injected_5xx_surfaces_in_every_sdk(esp, status):
    """A reply fault on phase http gives each SDK that status, as that SDK reports it; nothing is kept."""
    text = "Internal Server Error" if status == 500 else "Service Unavailable"
    kept_before = LedgerReader(esp.ledger_dir).count(Kind.ESP_ACCEPTED)
    esp.control.add_fault({"type": "reply", "phase": "http", "reply": f"{status} {text}"})
    sg_error = InternalServerError if status == 500 else ServiceUnavailableError
    with pytest.raises(sg_error) as sg:
        sendgrid_send(esp, new_id())
    assert sg.value.status_code == status
    with pytest.raises(ClientError) as ses:
        ses_send(esp, new_id())
    assert ses.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert ses.value.response["Error"]["Code"] == (
        "InternalFailure" if status == 500 else "ServiceUnavailable"
    )
    assert mailgun_send(esp, new_id()).status_code == status
    with pytest.raises(PostmarkError) as pm:
        postmark_send(esp, new_id())
    assert pm.value.__cause__.response.status_code == status
    assert LedgerReader(esp.ledger_dir).count(Kind.ESP_ACCEPTED) == kept_before
    replied = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["code"] == status]
    assert {r["api"] for r in replied} >= {"sendgrid", "ses", "mailgun", "postmark"}


# -- cut connections and no answer ------------------------------------------------------------------------
def test_disconnect_fault_resets_the_connection(esp):
    """A disconnect fault on phase http: the SDK sees a reset connection, no HTTP answer; the ledger
    records the cut (code null) and keeps nothing."""
    esp.control.add_fault({"name": "cut", "type": "disconnect", "phase": "http"})
    cid = new_id()
    with pytest.raises(
        (botocore.exceptions.ConnectionClosedError, botocore.exceptions.EndpointConnectionError)
    ):
        ses_send(esp, cid)
    with pytest.raises(requests.exceptions.ConnectionError):
        postmark_send(esp, new_id())
    cuts = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["fault"] == "cut"]
    assert cuts and all(r["code"] is None and r["proto"] == "http" for r in cuts)
    assert accepted(esp, cid) == []


def test_outage_hang_gives_no_answer_until_the_client_times_out(esp):
    """An outage in hang mode: the request is accepted by TCP and never answered; the client times out."""
    esp.control.add_fault(
        {"name": "down", "type": "outage", "phase": "http", "duration_s": 3, "mode": "hang"}
    )
    client = PostmarkClient(server_token="pm-token", root_api_url=esp.http_url, timeout=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.emails.send(From="a@example.test", To="b@example.test", Subject="s", TextBody="b")
