"""The fake ESP's webhook signatures checked by the receivers' own verifiers, end to end: a real fake ESP
process posting to a real receiver on loopback. SendGrid's Signed Event Webhook verified by the sendgrid
SDK's ``EventWebhook`` with the run's key (made per run, or configured); SES's SNS messages by
aws-sns-message-validator (SignatureVersion 1) and by AWS's published algorithm with ``cryptography``
(version 2, which that validator does not do), the SubscriptionConfirmation first and its confirmation
recorded; Mandrill's X-Mandrill-Signature by the algorithm Mandrill documents."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import re
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from mailstorm.fake_esp.webhooks.signing import load_or_make
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port
from tests.fake_esp.http_support import SIGNING_KEY, Receiver, start_esp, wait_until, webhook_records


def send(esp, api: str, n: int) -> None:
    send_plain = importlib.import_module(f"tests.fake_esp.esps.test_{api}").send_plain
    for i in range(n):
        send_plain(esp.http_url, f"sig-{api}-{i}")


def collect(tmp_path, api: str, n: int, posts: int, **webhooks):
    """n messages through ``api`` to an ESP posting its webhooks to a receiver; (its keys, the posts
    received) once ``posts`` have come."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, **webhooks)
        try:
            send(esp, api, n)
            wait_until(lambda: len(rx.posts) >= posts)
            keys = load_or_make(esp.ledger_dir / "webhook-keys.json")
        finally:
            esp.stop()
        return keys, list(rx.posts)


def test_sendgrids_eventwebhook_helper_verifies_every_post(tmp_path):
    """Every SendGrid POST carries the two Twilio headers, and sendgrid's own EventWebhook helper
    verifies it with the verification key the fake printed at start (base64 DER, as SendGrid shows it);
    the same POST with its body or timestamp changed does not verify."""
    from sendgrid.helpers.eventwebhook import EventWebhook
    from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader as H

    keys, posts = collect(tmp_path, "sendgrid", 3, 3, events={"open": 1.0})
    assert f"SendGrid verification key {keys.sendgrid_public}" in (tmp_path / "esp.log").read_text()
    helper = EventWebhook(public_key=keys.sendgrid_public)
    events = 0
    for headers, body in posts:
        sig, ts = headers[H.SIGNATURE], headers[H.TIMESTAMP]
        assert helper.verify_signature(body.decode(), sig, ts)
        assert not helper.verify_signature(body.decode().replace("sig-", "SIG-"), sig, ts)
        assert not helper.verify_signature(body.decode(), sig, str(int(ts) + 1))
        events += len(orjson.loads(body))
    assert events >= 3


def test_a_configured_sendgrid_key_signs(tmp_path):
    """``sendgrid_key`` (a P-256 private key's PEM) is the key the fake signs with: its public key
    verifies; a key that is not P-256 is refused at start with one line naming the field."""
    from sendgrid.helpers.eventwebhook import EventWebhook

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    keys, posts = collect(tmp_path, "sendgrid", 1, 1, sendgrid_key=pem)
    assert keys.sendgrid_public == public
    ((headers, body),) = posts
    sig = headers["X-Twilio-Email-Event-Webhook-Signature"]
    ts = headers["X-Twilio-Email-Event-Webhook-Timestamp"]
    assert EventWebhook(public_key=public).verify_signature(body.decode(), sig, ts)


def _verify_v2(message: dict, cert_pem: bytes) -> None:
    """AWS's published check (sns-verify-signature-of-message): the string to sign from the message's
    fields, SHA256withRSA for SignatureVersion 2. InvalidSignature when it does not hold."""
    fields = {
        "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
        "SubscriptionConfirmation": (
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ),
    }[message["Type"]]
    text = "".join(f"{k}\n{message[k]}\n" for k in fields if k in message)
    key = x509.load_pem_x509_certificate(cert_pem).public_key()
    key.verify(base64.b64decode(message["Signature"]), text.encode(), padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize("version", [1, 2])
def test_ses_posts_sns_subscription_confirmation_first_and_signs_every_message(tmp_path, version):
    """The first SES POST is SNS's SubscriptionConfirmation; it and every Notification verify against
    the certificate the fake serves at SigningCertURL on its control API (version 1: the
    aws-sns-message-validator package; 2: AWS's algorithm). A GET on SubscribeURL confirms (AWS's
    ConfirmSubscriptionResponse), a wrong token is refused, and the ledger records the request and both
    confirmations. A changed message does not verify."""
    from sns_message_validator import SNSMessageValidator
    from sns_message_validator.exceptions import SignatureVerificationFailureException

    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, sns_signature_version=version)
        try:
            send(esp, "ses", 3)
            wait_until(lambda: len(rx.posts) >= 4)
            posts = [(h, orjson.loads(b)) for h, b in rx.posts]
            first = posts[0][1]
            assert first["Type"] == "SubscriptionConfirmation"
            assert posts[0][0]["x-amz-sns-message-type"] == "SubscriptionConfirmation"
            assert [m["Type"] for _, m in posts[1:]] == ["Notification"] * 3
            cert_url = first["SigningCertURL"]
            assert cert_url.startswith(f"{esp.control_url}/sns/")
            cert = requests.get(cert_url, timeout=5).content
            validator = SNSMessageValidator(cert_url_regex=rf"^{re.escape(esp.control_url)}/sns/")
            for _, message in posts:
                assert message["SignatureVersion"] == str(version)
                if version == 1:
                    validator.validate_message(message)
                    with pytest.raises(SignatureVerificationFailureException):
                        validator.validate_message(message | {"Message": message["Message"] + " "})
                else:
                    _verify_v2(message, cert)
                    with pytest.raises(InvalidSignature):
                        _verify_v2(message | {"Message": message["Message"] + " "}, cert)
            subscribe = first["SubscribeURL"]
            assert subscribe.startswith(f"{esp.control_url}/sns?Action=ConfirmSubscription")
            resp = requests.get(subscribe, timeout=5)
            assert resp.status_code == 200 and "<SubscriptionArn>arn:aws:sns:" in resp.text
            wrong = subscribe.replace(parse_qs(urlsplit(subscribe).query)["Token"][0], "0" * 128)
            assert requests.get(wrong, timeout=5).status_code == 400
        finally:
            esp.stop()
    recs = list(LedgerReader(esp.ledger_dir).records([Kind.ESP_SUBSCRIPTION]))
    assert [(r["action"], r["ok"]) for r in recs] == [
        ("request", True),
        ("confirm", True),
        ("confirm", False),
    ]
    assert {r["url"] for r in recs} == {rx.url}


def test_mandrill_signs_the_url_and_sorted_params(tmp_path):
    """X-Mandrill-Signature is base64 HMAC-SHA1 (webhook key) of the configured URL, userinfo included,
    followed by each form field's name and value sorted by name, as Mandrill documents. Posted ``via``
    another address (as the runner's chaos proxy), what is signed and recorded is still the URL."""
    with Receiver() as rx:
        url = f"http://hook:pw@127.0.0.1:{free_port()}/hook?src=mandrill"
        esp = start_esp(tmp_path, url, via=rx.url)
        try:
            send(esp, "mandrill", 2)
            wait_until(lambda: len(rx.events()) >= 2)
        finally:
            esp.stop()
        posts = list(rx.posts)
    assert {r["url"] for r in webhook_records(esp)} == {url.replace(":pw@", ":***@")}
    for headers, body in posts:
        params = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
        signed = url + "".join(k + params[k] for k in sorted(params))
        want = base64.b64encode(
            hmac.new(SIGNING_KEY.encode(), signed.encode(), hashlib.sha1).digest()
        ).decode()
        assert headers["X-Mandrill-Signature"] == want


def test_the_keys_file_is_made_once_and_a_configured_sendgrid_key_replaces_its_key(tmp_path):
    """load_or_make writes the keys once (mode 0600) and gives the same keys after (an ESP started again
    signs with them); a configured SendGrid key replaces the made one and stays; a broken file is one
    line naming it."""
    from mailstorm.errors import UserError

    path = tmp_path / "esp" / "webhook-keys.json"
    first = load_or_make(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_or_make(path) == first
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )
    configured = load_or_make(path, pem)
    assert configured.sendgrid_public != first.sendgrid_public
    assert (configured.sns_cert, configured.sns_secret) == (first.sns_cert, first.sns_secret)
    assert load_or_make(path) == configured
    path.write_text("{")
    with pytest.raises(UserError, match=r"^webhook keys .*webhook-keys.json: unreadable"):
        load_or_make(path)
