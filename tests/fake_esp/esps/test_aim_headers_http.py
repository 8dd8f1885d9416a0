"""``match.header`` over every HTTP API that carries headers: a fault aimed at ``X-Tenant: gold`` refuses
exactly the messages whose request carried that header in the API's own field (or raw MIME), sent with
the ESP's official SDK where the tests have one, and lets every other message through."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable

import ElasticEmail
import httpx
import pytest
import requests
import resend
from brevo import Brevo
from ElasticEmail.api.emails_api import EmailsApi
from ElasticEmail.models.body_content_type import BodyContentType
from ElasticEmail.models.body_part import BodyPart
from ElasticEmail.models.email_content import EmailContent
from ElasticEmail.models.email_transactional_message_data import EmailTransactionalMessageData
from ElasticEmail.models.transactional_recipient import TransactionalRecipient
from mailersend import EmailBuilder
from mailgun.client import Client as MailgunClient
from mailgun.config import RetryPolicy
from postmarker.core import PostmarkClient
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Header, Mail

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from tests.fake_esp.esps.test_mailersend import mailersend_client
from tests.fake_esp.esps.test_mailgun import DOMAIN
from tests.fake_esp.esps.test_mailjet import mailjet_client
from tests.fake_esp.esps.test_mandrill import mandrill_client
from tests.fake_esp.esps.test_ses import ses_client
from tests.fake_esp.esps.test_sparkpost import sparkpost_client
from tests.fake_esp.http_support import accepted, new_id

TENANT = "X-Tenant"
FAULT = {"name": "gold", "type": "reply", "phase": "http", "reply": "500 Internal Server Error",
         "match": {"header": {TENANT: "^gold$"}}}  # fmt: skip
MG_AUTH = {"Authorization": "Basic " + base64.b64encode(b"api:mg-key").decode()}


def _mime(cid: str, tenant: str) -> str:
    return (
        f"From: app@example.test\r\nTo: user@example.test\r\nSubject: s\r\n{CORRELATION_HEADER}: {cid}\r\n"
        f"{TENANT}: {tenant}\r\n\r\nb\r\n"
    )


def sendgrid(esp: EspProcess, cid: str, tenant: str) -> None:
    mail = Mail(
        from_email="app@example.test", to_emails="user@example.test", subject="s", plain_text_content="b"
    )
    mail.header = [Header(CORRELATION_HEADER, cid), Header(TENANT, tenant)]
    SendGridAPIClient("SG.k", host=esp.http_url).send(mail)


def brevo(esp: EspProcess, cid: str, tenant: str) -> None:
    with httpx.Client(timeout=10) as http:
        client = Brevo(api_key="xkeysib-k", base_url=esp.http_url + "/v3", max_retries=0, httpx_client=http)
        client.transactional_emails.send_transac_email(
            sender={"email": "app@example.test"},
            to=[{"email": "user@example.test"}],
            subject="s",
            text_content="b",
            headers={CORRELATION_HEADER: cid, TENANT: tenant},
        )


def mailgun(esp: EspProcess, cid: str, tenant: str) -> None:
    client = MailgunClient(
        auth=("api", "mg-key"), api_url=esp.http_url, retry_policy=RetryPolicy(max_retries=0)
    )
    data = {"from": "app@example.test", "to": "user@example.test", "subject": "s", "text": "b",
            f"h:{CORRELATION_HEADER}": cid, f"h:{TENANT}": tenant}  # fmt: skip
    client.messages.create(data=data, domain=DOMAIN)


def mailgun_mime(esp: EspProcess, cid: str, tenant: str) -> None:
    files = {"message": ("message.mime", _mime(cid, tenant).encode())}
    url = f"{esp.http_url}/v3/{DOMAIN}/messages.mime"
    requests.post(url, data={"to": "user@example.test"}, files=files, headers=MG_AUTH, timeout=10)


def mailjet(esp: EspProcess, cid: str, tenant: str) -> None:
    msg = {"From": {"Email": "app@example.test"}, "To": [{"Email": "user@example.test"}], "Subject": "s",
           "TextPart": "b", "Headers": {CORRELATION_HEADER: cid, TENANT: tenant}}  # fmt: skip
    with mailjet_client(esp) as client:
        client.send.create(data={"Messages": [msg]})


def mandrill(esp: EspProcess, cid: str, tenant: str) -> None:
    message = {"from_email": "app@example.test", "subject": "s", "text": "b",
               "to": [{"email": "user@example.test", "type": "to"}],
               "headers": {CORRELATION_HEADER: cid, TENANT: tenant}}  # fmt: skip
    mandrill_client(esp).messages.send({"message": message})


def postmark(esp: EspProcess, cid: str, tenant: str) -> None:
    PostmarkClient(server_token="pm-token", root_api_url=esp.http_url).emails.send(
        From="app@example.test",
        To="user@example.test",
        Subject="s",
        TextBody="b",
        Headers={CORRELATION_HEADER: cid, TENANT: tenant},
    )


def resend_(esp: EspProcess, cid: str, tenant: str) -> None:
    resend.api_key, resend.api_url = "re_k", esp.http_url
    resend.Emails.send({"from": "app@example.test", "to": ["user@example.test"], "subject": "s", "text": "b",
                        "headers": {CORRELATION_HEADER: cid, TENANT: tenant}})  # fmt: skip


def ses(esp: EspProcess, cid: str, tenant: str) -> None:
    headers = [{"Name": CORRELATION_HEADER, "Value": cid}, {"Name": TENANT, "Value": tenant}]
    content = {"Simple": {"Subject": {"Data": "s"}, "Body": {"Text": {"Data": "b"}}, "Headers": headers}}
    ses_client(esp).send_email(
        FromEmailAddress="app@example.test",
        Destination={"ToAddresses": ["user@example.test"]},
        Content=content,
    )


def ses_raw(esp: EspProcess, cid: str, tenant: str) -> None:
    ses_client(esp).send_email(Content={"Raw": {"Data": _mime(cid, tenant).encode()}})


def sparkpost(esp: EspProcess, cid: str, tenant: str) -> None:
    sparkpost_client(esp).transmissions.send(
        recipients=["user@example.test"],
        from_email="app@example.test",
        subject="s",
        text="b",
        custom_headers={CORRELATION_HEADER: cid, TENANT: tenant},
    )


def sparkpost_rfc822(esp: EspProcess, cid: str, tenant: str) -> None:
    body = {"recipients": [{"address": {"email": "user@example.test"}}],
            "content": {"email_rfc822": _mime(cid, tenant)}}  # fmt: skip
    requests.post(
        f"{esp.http_url}/api/v1/transmissions", json=body, headers={"Authorization": "k"}, timeout=10
    )


def mailersend(esp: EspProcess, cid: str, tenant: str) -> None:
    email = (
        EmailBuilder()
        .from_email("app@example.com", "App")
        .to("user@example.com")
        .subject("s")
        .text("b")
        .header(CORRELATION_HEADER, cid)
        .header(TENANT, tenant)
        .build()
    )
    mailersend_client(esp).emails.send(email)


def elasticemail(esp: EspProcess, cid: str, tenant: str) -> None:
    config = ElasticEmail.Configuration(host=esp.http_url + "/v4")
    config.api_key["apikey"] = "ee-key"
    content = EmailContent(
        From="app@example.test",
        Subject="s",
        Body=[BodyPart(ContentType=BodyContentType.PLAINTEXT, Content="b")],
        Headers={CORRELATION_HEADER: cid, TENANT: tenant},
    )
    data = EmailTransactionalMessageData(
        Recipients=TransactionalRecipient(To=["user@example.test"]), Content=content
    )
    with ElasticEmail.ApiClient(config) as api:
        EmailsApi(api).emails_transactional_post(data)


def postal(esp: EspProcess, cid: str, tenant: str) -> None:
    body = {"to": ["user@example.test"], "from": "app@example.test", "subject": "s", "plain_body": "b",
            "headers": {CORRELATION_HEADER: cid, TENANT: tenant}}  # fmt: skip
    requests.post(
        f"{esp.http_url}/api/v1/send/message", json=body, headers={"X-Server-API-Key": "k"}, timeout=10
    )


def postal_raw(esp: EspProcess, cid: str, tenant: str) -> None:
    body = {"rcpt_to": ["user@example.test"], "mail_from": "app@example.test",
            "data": base64.b64encode(_mime(cid, tenant).encode()).decode()}  # fmt: skip
    requests.post(f"{esp.http_url}/api/v1/send/raw", json=body, headers={"X-Server-API-Key": "k"}, timeout=10)


def sendpulse(esp: EspProcess, cid: str, tenant: str) -> None:
    creds = {"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}
    token = requests.post(f"{esp.http_url}/oauth/access_token", json=creds, timeout=10).json()["access_token"]
    headers = {CORRELATION_HEADER: cid, TENANT: tenant}
    email = {"text": "b", "subject": "s", "from": {"email": "app@example.test"},
             "to": [{"email": "user@example.test"}], "headers": headers}  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    requests.post(f"{esp.http_url}/smtp/emails", json={"email": email}, headers=auth, timeout=10)


SENDERS: dict[str, Callable[[EspProcess, str, str], None]] = {
    "sendgrid": sendgrid,
    "brevo": brevo,
    "mailgun": mailgun,
    "mailgun-mime": mailgun_mime,
    "mailjet": mailjet,
    "mandrill": mandrill,
    "postmark": postmark,
    "resend": resend_,
    "ses": ses,
    "ses-raw": ses_raw,
    "sparkpost": sparkpost,
    "sparkpost-rfc822": sparkpost_rfc822,
    "mailersend": mailersend,
    "elasticemail": elasticemail,
    "postal": postal,
    "postal-raw": postal_raw,
    "sendpulse": sendpulse,
}


def refused(esp: EspProcess, cid: str) -> list[dict]:
    """The esp.replied records of the aimed fault for correlation id ``cid``."""
    recs = LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED])
    return [r for r in recs if r.get("id") == cid and r.get("fault") == "gold"]


@pytest.mark.parametrize("api", list(SENDERS))
def test_a_header_aimed_fault_hits_exactly_the_messages_that_carry_it(esp, api):
    """Two messages each for gold and silver: the gold ones get the fault's 500 (the SDK raises, the
    ledger has the refusal and nothing accepted), the silver ones are accepted once each."""
    esp.control.add_fault(FAULT)
    send = SENDERS[api]
    gold, silver = [new_id("gold") for _ in range(2)], [new_id("silver") for _ in range(2)]
    for g, s in zip(gold, silver, strict=True):
        with contextlib.suppress(Exception):  # each SDK raises its own error type on the 500
            send(esp, g, "gold")
        send(esp, s, "silver")
    for g in gold:
        assert accepted(esp, g) == [] and [r["code"] for r in refused(esp, g)] == [500], api
    for s in silver:
        assert len(accepted(esp, s)) == 1 and refused(esp, s) == [], api


def test_a_header_value_is_searched_and_its_name_is_case_insensitive(esp):
    """The regex is searched in the value, the name matched whatever its case (as over SMTP)."""
    esp.control.add_fault({**FAULT, "match": {"header": {"x-TENANT": "ol"}}})
    gold, silver = new_id("gold"), new_id("silver")
    with contextlib.suppress(Exception):
        postmark(esp, gold, "gold")
    postmark(esp, silver, "silver")
    assert refused(esp, gold) and not accepted(esp, gold)
    assert accepted(esp, silver) and not refused(esp, silver)


def test_a_line_break_in_a_header_value_cannot_forge_a_header(esp):
    """A value with CRLF in it is one field: its second line does not match as a header of its own."""
    esp.control.add_fault(FAULT)
    cid = new_id()
    postmark(esp, cid, f"silver\r\n{TENANT}: gold")
    assert len(accepted(esp, cid)) == 1 and not refused(esp, cid)


def test_a_request_with_several_messages_is_aimed_at_when_any_carries_the_header(esp):
    """A Postmark batch of a silver and a gold message is one request: the fault refuses it whole."""
    esp.control.add_fault(FAULT)
    ids = [new_id("silver"), new_id("gold")]
    batch = [{"From": "app@example.test", "To": "user@example.test", "Subject": "s", "TextBody": "b",
              "Headers": [{"Name": CORRELATION_HEADER, "Value": cid}, {"Name": TENANT, "Value": cid[:-13]}]}
             for cid in ids]  # fmt: skip
    r = requests.post(
        f"{esp.http_url}/email/batch", json=batch, headers={"X-Postmark-Server-Token": "k"}, timeout=10
    )
    assert r.status_code == 500 and all(accepted(esp, cid) == [] for cid in ids)


def test_an_api_without_a_header_field_is_never_aimed_at_by_header(esp):
    """HubSpot's single send carries no headers: a header-aimed fault lets it through."""
    esp.control.add_fault({**FAULT, "match": {"header": {CORRELATION_HEADER: "."}}})
    cid = new_id()
    body = {"emailId": 1, "message": {"to": "user@example.test", "sendId": cid}}
    r = requests.post(
        f"{esp.http_url}/marketing/v3/transactional/single-email/send",
        json=body,
        headers={"Authorization": "Bearer hs-token"},
        timeout=10,
    )
    assert r.status_code == 200 and len(accepted(esp, cid)) == 1
