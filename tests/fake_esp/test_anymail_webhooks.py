"""django-anymail's tracking webhook views take the fake's signed webhooks as they take the real ESPs':
for MailerSend (HMAC ``Signature``), Resend (Svix), SparkPost (HTTP Basic) and Postal (RSA), each
event the fake posted is verified with the secret anymail is configured with and comes out as anymail's
tracking event (delivered, the ESP's message id from the ledger); the same POST verified with another
secret, or (the signed ones) with its body changed, is refused (AnymailWebhookValidationFailure)."""

from __future__ import annotations

import base64
import importlib
import secrets

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.http_support import Receiver, start_esp, wait_until


def _rsa_pair() -> tuple[str, str]:
    """(private key PEM, public key as anymail's POSTAL_WEBHOOK_KEY: the base64 body of its PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, "".join(line for line in public.splitlines() if "-----" not in line)


def _svix_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def secrets_for(api: str) -> tuple[str, dict, dict]:
    """(the fake's signing key, anymail's configuration, a wrong one) for ESP ``api``: the view's kwargs,
    and under ``ANYMAIL`` its settings."""
    if api == "mailersend":
        return "ms-signing-secret", {"signing_secret": "ms-signing-secret"}, {"signing_secret": "other"}
    if api == "resend":
        key = _svix_secret()
        return key, {"signing_secret": key}, {"signing_secret": _svix_secret()}
    if api == "sparkpost":
        # Basic auth is anymail's WEBHOOK_SECRET setting (shared by its views), not a view argument.
        return (
            "hook:pa55",
            {"ANYMAIL": {"WEBHOOK_SECRET": "hook:pa55"}},
            {"ANYMAIL": {"WEBHOOK_SECRET": "hook:x"}},
        )
    private, public = _rsa_pair()
    return private, {"webhook_key": public}, {"webhook_key": _rsa_pair()[1]}


VIEWS = {
    "mailersend": "anymail.webhooks.mailersend.MailerSendTrackingWebhookView",
    "resend": "anymail.webhooks.resend.ResendTrackingWebhookView",
    "sparkpost": "anymail.webhooks.sparkpost.SparkPostTrackingWebhookView",
    "postal": "anymail.webhooks.postal.PostalTrackingWebhookView",
}


def view_class(api: str):
    module, _, name = VIEWS[api].rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("api", list(VIEWS))
def test_anymail_tracking_view_verifies_and_parses_the_fakes_webhook(api, tmp_path):
    from anymail.exceptions import AnymailWebhookValidationFailure
    from anymail.signals import EventType, tracking
    from django.test import RequestFactory
    from django.test.utils import override_settings

    from tests.fake_esp.django_setup import configure

    configure()
    send = importlib.import_module(f"tests.fake_esp.esps.test_{api}").send_plain
    signing_key, good, wrong = secrets_for(api)
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, signing_key=signing_key)
        try:
            send(esp.http_url, f"anymail-{api}")
            wait_until(lambda: len(rx.posts) >= 1)
            (rec,) = LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])
        finally:
            esp.stop()
    ((headers, body),) = rx.posts
    skip = {"content-length", "content-type", "host"}
    extra = {k: v for k, v in headers.items() if k.lower() not in skip}

    def post(data: bytes, config: dict):
        kwargs = dict(config)
        request = RequestFactory().post(
            "/hook", data=data, content_type=headers["Content-Type"], headers=extra
        )
        with override_settings(ANYMAIL=kwargs.pop("ANYMAIL", {})):
            return view_class(api).as_view(**kwargs)(request)

    seen = []

    def receiver(sender, event, esp_name, **kw):
        seen.append(event)

    tracking.connect(receiver, weak=False)
    try:
        assert post(body, good).status_code == 200
        (event,) = seen
        assert event.event_type == EventType.DELIVERED and event.recipient == "u@example.test"
        assert str(event.message_id) == rec["esp_id"], (event.message_id, rec["esp_id"])
        refused = [(body, wrong)]
        if api != "sparkpost":  # SparkPost's basic auth authenticates the sender, not the body
            refused.append((body.replace(b"u@example.test", b"v@example.test"), good))
        for data, kwargs in refused:
            with pytest.raises(AnymailWebhookValidationFailure):
                post(data, kwargs)
        assert len(seen) == 1
    finally:
        tracking.disconnect(receiver)
