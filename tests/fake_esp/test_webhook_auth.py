"""Webhook credentials and the ``bad_signature`` fault, end to end (a real fake ESP posting to a real
receiver on loopback): the spec's ``auth`` (basic, bearer, custom headers) on every POST and never in the
ledger; a password in the URL redacted there; and receivers that verify (django-anymail's tracking views
for SendGrid, Mailgun and Mandrill; aws-sns-message-validator for SES) refusing exactly the POSTs the
fault signed wrongly, which the ledger marks ``bad_signature``, and accepting every other."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib
import re
from collections import defaultdict
from typing import Any

import orjson
import pytest
import requests

from mailstorm.fake_esp.webhooks.signing import load_or_make
from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.http_support import (
    SIGNING_KEY,
    Receiver,
    format_of,
    start_esp,
    wait_until,
    webhook_records,
)

SECRET = "s3cret-never-in-ledger"


def send(esp, api: str, n: int) -> None:
    send_plain = importlib.import_module(f"tests.fake_esp.esps.test_{api}").send_plain
    for i in range(n):
        send_plain(esp.http_url, f"auth-{api}-{i}")


def posted(tmp_path, sends: dict[str, int], posts: int, url=lambda u: u, **webhooks: Any):
    """Messages through each API of ``sends`` (how many each) to an ESP posting to a receiver (at
    ``url(its URL)``); (the ESP, stopped; the posts received; the receiver's URL) once ``posts`` came."""
    with Receiver() as rx:
        esp = start_esp(tmp_path, url(rx.url), **webhooks)
        try:
            for api, n in sends.items():
                send(esp, api, n)
            wait_until(lambda: len(rx.posts) >= posts)
        finally:
            esp.stop()
        return esp, list(rx.posts), rx.url


def ledger_text(esp) -> str:
    return "".join(p.read_text() for p in esp.ledger_dir.glob("*.jsonl"))


@pytest.mark.parametrize(
    ("auth", "header", "value"),
    [
        (
            {"basic": f"hook:{SECRET}"},
            "Authorization",
            "Basic " + base64.b64encode(f"hook:{SECRET}".encode()).decode(),
        ),
        ({"bearer": SECRET}, "Authorization", f"Bearer {SECRET}"),
        ({"headers": {"X-Hook-Token": SECRET}}, "X-Hook-Token", SECRET),
    ],
    ids=["basic", "bearer", "headers"],
)
def test_auth_is_on_every_post_and_never_in_the_ledger(tmp_path, auth, header, value):
    """Every POST (events of two formats, SES's SubscriptionConfirmation included) carries the
    configured credentials; no ledger line holds the secret."""
    esp, posts, _ = posted(tmp_path, {"mailgun": 2, "ses": 1}, 4, auth=auth)
    assert {format_of(h, b) for h, b in posts} == {"mailgun", "ses"}
    assert all(h.get(header) == value for h, _ in posts)
    assert len(webhook_records(esp)) == 3
    assert SECRET not in ledger_text(esp)


def test_a_password_in_the_url_is_sent_and_redacted_in_the_ledger(tmp_path):
    """Basic auth given in the URL goes out as the Authorization header; the ledger's url shows the user,
    not the password."""
    with_password = lambda u: u.replace("http://", f"http://hook:{SECRET}@")  # noqa: E731
    esp, ((headers, _),), rx_url = posted(tmp_path, {"mailgun": 1}, 1, url=with_password)
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"hook:{SECRET}".encode()).decode()
    (rec,) = webhook_records(esp)
    assert rec["url"] == rx_url.replace("http://", "http://hook:***@")
    assert SECRET not in ledger_text(esp)


APIS = ["sendgrid", "mailgun", "mandrill", "ses"]


class Verifier:
    """A receiver's checks per format: anymail's tracking views (signature verification on) for
    SendGrid, Mailgun and Mandrill; aws-sns-message-validator for SES (anymail does not verify SNS
    signatures), which confirms the subscription itself. 200 when the POST verifies, else 403."""

    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}
        self.control = ""

    def __call__(self, headers: dict[str, str], body: bytes) -> int:
        from anymail.exceptions import AnymailWebhookValidationFailure
        from anymail.webhooks.mailgun import MailgunTrackingWebhookView
        from anymail.webhooks.mandrill import MandrillCombinedWebhookView
        from anymail.webhooks.sendgrid import SendGridTrackingWebhookView
        from django.test import RequestFactory
        from django.test.utils import override_settings
        from sns_message_validator import SNSMessageValidator
        from sns_message_validator import exceptions as sns

        refusals = (  # its exceptions have no common base
            sns.InvalidCertURLException,
            sns.InvalidSignatureVersionException,
            sns.SignatureVerificationFailureException,
        )

        fmt = format_of(headers, body)
        if fmt == "ses":
            message = orjson.loads(body)
            try:
                SNSMessageValidator(cert_url_regex=rf"^{re.escape(self.control)}/sns/").validate_message(
                    message
                )
            except refusals:
                return 403
            if message["Type"] == "SubscriptionConfirmation":
                requests.get(message["SubscribeURL"], timeout=5).raise_for_status()
            return 200
        views = {
            "sendgrid": SendGridTrackingWebhookView,
            "mailgun": MailgunTrackingWebhookView,
            "mandrill": MandrillCombinedWebhookView,
        }
        skip = ("content-type", "content-length", "host")
        extra = {k: v for k, v in headers.items() if k.lower() not in skip}
        request = RequestFactory().post(
            "/hook", data=body, content_type=headers["Content-Type"], headers=extra
        )
        try:
            with override_settings(ANYMAIL=self.settings):
                return views[fmt].as_view()(request).status_code
        except AnymailWebhookValidationFailure:
            return 403


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailInsecureWebhookWarning")
@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
def test_verifying_receivers_refuse_exactly_the_bad_signatures(tmp_path):
    """With half the events signed wrongly, the verifying receivers answer 403 to every attempt of each
    of those (which the ledger marks ``fault: bad_signature``) and 200 to every other event, in every
    format; both kinds occur in each."""
    from tests.fake_esp.django_setup import configure

    configure()
    verify = Verifier()
    with Receiver(judge=verify) as rx:
        esp = start_esp(
            tmp_path,
            rx.url,
            events={"open": 1.0},
            faults={"bad_signature": 0.5},
            retry_time_scale=0.0001,
            timeout_s=30,
        )
        try:
            verify.control = esp.control_url
            verify.settings = {
                "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
                "MANDRILL_WEBHOOK_KEY": SIGNING_KEY,
                "MANDRILL_WEBHOOK_URL": rx.url,
                "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": load_or_make(
                    esp.ledger_dir / "webhook-keys.json"
                ).sendgrid_public,
            }
            for api in APIS:
                send(esp, api, 4)

            def settled() -> bool:
                recs = webhook_records(esp)
                return len({r["event_id"] for r in recs if r["final"]}) >= 2 * 4 * len(APIS)

            wait_until(settled, timeout=60)
        finally:
            esp.stop()
    recs = webhook_records(esp)
    kinds: dict[str, set[bool]] = defaultdict(set)
    for r in recs:
        bad = r["fault"] == "bad_signature"
        kinds[r["api"]].add(bad)
        # Every answer is the verifier's (an attempt that timed out on a loaded machine has none).
        assert r["status"] == (403 if bad else 200) or (r["status"] is None and r["error"]), r
        if r["final"]:
            assert r["ok"] is not bad, r
    assert kinds == {api: {True, False} for api in APIS}
    subs = list(LedgerReader(esp.ledger_dir).records([Kind.ESP_SUBSCRIPTION]))
    assert [(r["action"], r["ok"]) for r in subs] == [("request", True), ("confirm", True)]


def test_bad_signature_acts_only_where_a_post_carries_a_secret(tmp_path):
    """bad_signature 1.0: every Mailgun event is signed wrongly (its records say so, and its signature
    is not the one the signing key gives); Brevo's posts carry no signature and, without credentials,
    nothing to get wrong: they go out as ever and no record names the fault."""
    esp, posts, _ = posted(tmp_path, {"mailgun": 2, "brevo": 2}, 4, faults={"bad_signature": 1.0})
    faults = {(r["api"], r["fault"]) for r in webhook_records(esp)}
    assert faults == {("mailgun", "bad_signature"), ("brevo", None)}
    for headers, body in posts:
        if format_of(headers, body) == "mailgun":
            sig = orjson.loads(body)["signature"]
            good = hmac.new(SIGNING_KEY.encode(), (sig["timestamp"] + sig["token"]).encode(), hashlib.sha256)
            assert sig["signature"] != good.hexdigest()
