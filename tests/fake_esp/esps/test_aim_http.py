"""Aimed faults over the HTTP APIs, seen by the official SDKs (sendgrid, boto3 sesv2,
mailchimp-transactional): each match key an HTTP request carries, ``count`` and ``attempts``."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from mailchimp_transactional.api_client import ApiClientError
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from tests.fake_esp.esps.test_mandrill import mandrill_send
from tests.fake_esp.esps.test_ses import ses_send
from tests.fake_esp.http_support import accepted, new_id

REFUSE = "500 Internal Server Error"


def sendgrid(
    esp, cid: str, *, to: str = "user@example.test", sender: str = "app@example.test", key: str = "SG.k"
):
    """One SendGrid send; its status (202), or the status of the HTTPError the SDK raised."""
    mail = Mail(from_email=sender, to_emails=to, subject="s", plain_text_content="b")
    mail.custom_arg = CustomArg(CORRELATION_HEADER, cid)
    try:
        return SendGridAPIClient(key, host=esp.http_url).send(mail).status_code
    except HTTPError as exc:
        return exc.status_code


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ({"rcpt": "vip@*"}, {"to": "vip@example.test"}, {"to": "user@example.test"}),
        ({"rcpt_domain": "re:^bad\\."}, {"to": "u@bad.example"}, {"to": "u@good.example"}),
        ({"mail_from": "news@*"}, {"sender": "news@example.test"}, {"sender": "app@example.test"}),
        ({"api_key": fingerprint("SG.tenant-a")}, {"key": "SG.tenant-a"}, {"key": "SG.tenant-b"}),
        ({"auth_user": fingerprint("SG.tenant-a")}, {"key": "SG.tenant-a"}, {"key": "SG.tenant-b"}),
        ({"client_ip": "127.0.0.1"}, {}, None),
    ],
)
def test_each_match_key_over_sendgrid(esp, match, hit, miss):
    """A reply fault on phase http aimed with one match key: SendGrid's SDK gets the 500 for the request
    that shows it and 202 for one that does not (the key's name is its fingerprint, as in the ledger)."""
    esp.control.add_fault({"type": "reply", "phase": "http", "reply": REFUSE, "match": match})
    assert sendgrid(esp, new_id(), **hit) == 500
    if miss is not None:
        assert sendgrid(esp, new_id(), **miss) == 202


def test_client_ip_that_is_not_ours_never_fires(esp):
    """match.client_ip elsewhere than loopback: the SDK's request passes."""
    esp.control.add_fault({"type": "reply", "phase": "http", "reply": REFUSE, "match": {"client_ip": "10.*"}})
    assert sendgrid(esp, new_id()) == 202


def test_count_over_boto3_ends_the_fault(esp):
    """count 2 over SES (boto3): two ClientErrors, then sends pass and the fault is recorded as ended."""
    fid = esp.control.add_fault(
        {"type": "reply", "phase": "http", "reply": "503 Service Unavailable", "count": 2}
    )
    for _ in range(2):
        with pytest.raises(ClientError) as err:
            ses_send(esp, new_id())
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    ses_send(esp, new_id())
    assert esp.control.faults() == []
    ended = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_FAULT_ENDED]) if r["fault"] == fid]
    assert [(r["acted"], r["phase"]) for r in ended] == [(2, "http")]


def test_first_attempt_only_over_mandrill(esp):
    """attempts [1] over Mandrill's SDK: each message's first send is refused, its second accepted, by
    its correlation id (metadata), whichever messages come between."""
    esp.control.add_fault({"type": "reply", "phase": "http", "reply": REFUSE, "attempts": [1]})
    a, b = new_id(), new_id()
    for cid in (a, b):
        with pytest.raises(ApiClientError) as err:
            mandrill_send(esp, cid)
        assert err.value.status_code == 500
    for cid in (b, a):
        (out,) = mandrill_send(esp, cid)
        assert out["status"] == "sent"
        assert len(accepted(esp, cid)) == 1
