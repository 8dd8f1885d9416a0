"""django-anymail's own tracking webhook views as the receiver of the fake ESP's webhooks: messages sent
through anymail's ESP backends (with metadata and tags), the exact requests the fake posted (body and
headers, basic auth from the webhook URL as a real ESP sends it) fed to each ESP's anymail view through
Django's RequestFactory. Every event parses (200), its message id is the one the send returned through
anymail, its metadata and tags are what was sent, and a redelivered event (the ``duplicate`` fault)
carries the same event id. Every view verifies what it can: SendGrid's signature with the run's
verification key, Mandrill's X-Mandrill-Signature with the webhook key and URL, Mailgun's with its
signing key, basic auth everywhere; SES's view confirms the SNS subscription (through boto3, at the
fake's ConfirmSubscription URL), and the fake records the confirmation."""

from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from typing import Any

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.webhooks.signing import load_or_make
from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.http_support import SIGNING_KEY, Receiver, format_of, start_esp, wait_until
from tests.fake_esp.test_https_sdks import ANYMAIL, UNSUPPORTED, anymail_settings

WEBHOOK_AUTH = "hook:s3cret"  # in the webhook URL, as an ESP is told; anymail's WEBHOOK_SECRET
METADATA = {"campaign": "spring", "user_id": "42"}
TAGS = ["newsletter"]  # one: Postmark and Mailjet take a single tag
ESPS = ["sendgrid", "mailgun", "brevo", "mailjet", "mandrill", "postmark", "ses"]


def _views() -> dict[str, Any]:
    from anymail.webhooks.amazon_ses import AmazonSESTrackingWebhookView
    from anymail.webhooks.brevo import BrevoTrackingWebhookView
    from anymail.webhooks.mailgun import MailgunTrackingWebhookView
    from anymail.webhooks.mailjet import MailjetTrackingWebhookView
    from anymail.webhooks.mandrill import MandrillCombinedWebhookView
    from anymail.webhooks.postmark import PostmarkTrackingWebhookView
    from anymail.webhooks.sendgrid import SendGridTrackingWebhookView

    return {
        "sendgrid": SendGridTrackingWebhookView,
        "mailgun": MailgunTrackingWebhookView,
        "brevo": BrevoTrackingWebhookView,
        "mailjet": MailjetTrackingWebhookView,
        "mandrill": MandrillCombinedWebhookView,
        "postmark": PostmarkTrackingWebhookView,
        "ses": AmazonSESTrackingWebhookView,
    }


def send(esp: EspProcess, api: str, cid: str) -> str:
    """One message through anymail's ``api`` backend with METADATA and TAGS; the id anymail returned."""
    from django.core.mail import EmailMessage
    from django.test.utils import override_settings

    settings = {
        "EMAIL_BACKEND": f"anymail.backends.{ANYMAIL[api]}.EmailBackend",
        **anymail_settings(esp, api),
    }
    with override_settings(**settings):
        msg = EmailMessage("s", "b", "app@example.test", [f"user-{api}@example.test"])
        msg.metadata = {"mailstorm_id": cid, **METADATA}
        msg.tags = TAGS
        assert msg.send() == 1
    (status,) = msg.anymail_status.recipients.values()
    assert status.status in {"queued", "sent"}, status
    return status.message_id


def verifying(esp: EspProcess, url: str) -> dict[str, Any]:
    """anymail's settings that verify every signature the fake makes for ``esp`` posting to ``url``, and
    confirm SES's SNS subscription at the fake's SNS endpoint."""
    keys = load_or_make(esp.ledger_dir / "webhook-keys.json")
    return {
        "WEBHOOK_SECRET": WEBHOOK_AUTH,
        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
        "MANDRILL_WEBHOOK_KEY": SIGNING_KEY,
        "MANDRILL_WEBHOOK_URL": url,
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": keys.sendgrid_public,
        "AMAZON_SES_CLIENT_PARAMS": {
            "endpoint_url": f"{esp.control_url}/sns",
            "region_name": "us-east-1",
            "aws_access_key_id": "AKIDEXAMPLE",
            "aws_secret_access_key": "secret",
        },
    }


def parse(posts: list[tuple[dict[str, str], bytes]], anymail: dict[str, Any]) -> list[tuple[str, Any]]:
    """Each POST fed to its ESP's anymail view (configured with ``anymail``) as it came; (format,
    AnymailTrackingEvent) pairs."""
    from anymail.signals import tracking
    from django.test import RequestFactory
    from django.test.utils import override_settings

    got: list[tuple[str, Any]] = []
    fmt = ""

    def keep(sender: Any, event: Any, esp_name: str, **kw: Any) -> None:
        got.append((fmt, event))

    tracking.connect(keep, weak=False)
    views = _views()
    try:
        with override_settings(ANYMAIL=anymail):
            for headers, body in posts:
                fmt = format_of(headers, body)
                skip = ("content-type", "content-length", "host")  # RequestFactory sets these itself
                extra = {k: v for k, v in headers.items() if k.lower() not in skip}
                request = RequestFactory().post(
                    "/anymail/hook/", data=body, content_type=headers["Content-Type"], headers=extra
                )
                resp = views[fmt].as_view()(request)
                assert resp.status_code == 200, (fmt, resp.status_code, body[:300])
    finally:
        tracking.disconnect(keep)
    return got


def run(tmp_path, webhooks: dict[str, Any]) -> tuple[dict[str, str], list[tuple[str, Any]], list[dict]]:
    """Send one message through each anymail backend; ({cid: anymail's message id}, the events anymail's
    views parsed from the posts received, the fake's esp.subscription records)."""
    from tests.fake_esp.django_setup import configure

    configure()
    with Receiver() as rx:
        url = rx.url.replace("http://", f"http://{WEBHOOK_AUTH}@")
        esp = start_esp(tmp_path, url, **webhooks)
        try:
            sent = {}
            for api in ESPS:
                cid = f"any-{api}-{uuid.uuid4().hex[:8]}"
                sent[cid] = send(esp, api, cid)
            expect = len(ESPS) * (3 if webhooks.get("events") else 1) * (2 if webhooks.get("faults") else 1)
            wait_until(lambda: len(rx.events()) >= expect)
            posts = list(rx.posts)
            auth = "Basic " + base64.b64encode(WEBHOOK_AUTH.encode()).decode()
            assert all(h.get("Authorization") == auth for h, _ in posts)
            events = parse(posts, verifying(esp, url))  # while the ESP runs: SES's view confirms on it
        finally:
            esp.stop()
    assert "Traceback" not in (tmp_path / "esp.log").read_text()
    return sent, events, list(LedgerReader(esp.ledger_dir).records([Kind.ESP_SUBSCRIPTION]))


@UNSUPPORTED
def test_anymail_views_parse_every_event_with_the_sends_id_metadata_and_tags(tmp_path):
    sent, events, subscription = run(tmp_path, {"events": {"open": 1.0, "click": 1.0}})
    # SES's first POST was SNS's SubscriptionConfirmation, which anymail's view confirmed.
    assert [(r["action"], r["ok"]) for r in subscription] == [("request", True), ("confirm", True)]
    by_id = {mid: cid for cid, mid in sent.items()}
    seen: dict[str, set[str]] = defaultdict(set)
    for fmt, ev in events:
        assert ev.message_id in by_id, (fmt, ev.message_id, sent)
        cid = by_id[ev.message_id]
        assert cid.startswith(f"any-{fmt}-")
        meta = dict(ev.metadata)
        if fmt == "sendgrid" and ev.event_type == "opened":
            # A real field of SendGrid's open events that anymail's list of SendGrid keys predates: it
            # takes it for metadata (anymail 15 no longer supports SendGrid officially).
            assert meta.pop("sg_machine_open") is False
        assert meta == {"mailstorm_id": cid, **METADATA}, (fmt, ev.metadata)
        assert ev.tags == TAGS, (fmt, ev.tags)
        seen[fmt].add(ev.event_type)
    # Mandrill's event for a delivered message is "send", which anymail calls "sent".
    done = {fmt: "sent" if fmt == "mandrill" else "delivered" for fmt in ESPS}
    assert {fmt: seen[fmt] for fmt in ESPS} == {fmt: {done[fmt], "opened", "clicked"} for fmt in ESPS}


@UNSUPPORTED
def test_a_redelivered_event_carries_the_same_event_id(tmp_path):
    """With every event posted twice (duplicate fault), anymail parses both copies to the same event:
    same message id and type, and the same event id where the ESP's events have one (SendGrid's
    sg_event_id, Mailgun's signature token)."""
    sent, events, _ = run(tmp_path, {"faults": {"duplicate": 1.0}})
    copies: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for fmt, ev in events:
        copies[(fmt, ev.message_id)].append(ev)
    assert sorted(mid for _, mid in copies) == sorted(sent.values())
    for (fmt, _), evs in copies.items():
        assert len(evs) == 2, fmt
        assert evs[0].event_type == evs[1].event_type
        assert evs[0].event_id == evs[1].event_id, fmt
        if fmt in ("sendgrid", "mailgun"):
            assert evs[0].event_id, fmt


pytestmark = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
