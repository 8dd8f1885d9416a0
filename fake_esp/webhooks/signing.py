"""How the fake ESP's webhook POSTs prove who sent them: the run's keys, the signer a format signs with,
the credentials a POST carries, and what of them the ledger may show.

``WebhookKeys`` are the asymmetric keys of one run: SendGrid's ECDSA P-256 key pair (the Signed Event
Webhook; the receiver is configured with the public key, base64 DER as SendGrid's settings page shows it)
and the RSA key and self-signed certificate SNS signs SES notifications with (served at SigningCertURL on
the control API), plus the secret SNS subscription tokens are drawn from. ``load_or_make(path)`` makes them
once and keeps them in ``path`` (JSON, mode 0600): the runner makes the file before it starts the ESPs (so
it can print the public key and put it in run.json), every worker of every ESP of the run loads the same
file, and an ESP started again signs with the same keys. A configured SendGrid key (WebhookSpec
``sendgrid_key``, the PEM of a P-256 private key) replaces the generated one.

``Signer`` is what a format's ``sign`` gets for one POST: the URL as configured (Mandrill signs it), the
shared secret (``signing_key``: HMAC formats), the keys, and where the control API is (SNS's URLs).
``Signer.wrong()`` is the same signer with every secret replaced: the ``bad_signature`` webhook fault
signs with it, so the receiver that verifies refuses that POST.

``auth_headers`` turns a WebhookSpec's ``auth`` into the headers every POST carries; ``redact_url``
hides a password in a URL's userinfo: the ledger records where a POST went, never its credentials.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from mailstorm.errors import ConfigError, UserError

SNS_CERT_NAME = "sns.mailstorm.test"  # the fake SNS's certificate subject (self-signed)
WRONG = "-not-the-key"  # appended to a secret to make it wrong (bad_signature)


@dataclass(frozen=True)
class WebhookKeys:
    """One run's webhook keys, PEM (private keys PKCS#8, unencrypted)."""

    sendgrid: bytes
    sns_key: bytes
    sns_cert: bytes
    sns_secret: str  # SNS subscription tokens are HMACs under it

    @functools.cached_property
    def sendgrid_private(self) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(self.sendgrid, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return key

    @functools.cached_property
    def sns_private(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.sns_key, password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    @property
    def sendgrid_public(self) -> str:
        """The verification key as SendGrid shows it: base64 of the public key's DER (SubjectPublicKeyInfo),
        what ``sendgrid.helpers.eventwebhook.EventWebhook(public_key=...)`` and anymail take."""
        der = self.sendgrid_private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def as_json(self) -> str:
        return json.dumps(
            {
                "sendgrid": self.sendgrid.decode(),
                "sns_key": self.sns_key.decode(),
                "sns_cert": self.sns_cert.decode(),
                "sns_secret": self.sns_secret,
            }
        )

    @classmethod
    def make(cls, sendgrid: bytes | None = None) -> WebhookKeys:
        """New keys (SendGrid's from ``sendgrid`` when given)."""
        sns = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(
            sendgrid=sendgrid or _pem(ec.generate_private_key(ec.SECP256R1())),
            sns_key=_pem(sns),
            sns_cert=_self_signed(sns),
            sns_secret=secrets.token_hex(16),
        )


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SNS_CERT_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def sendgrid_key_pem(text: str, *, where: str = "webhooks.sendgrid_key") -> bytes:
    """A configured SendGrid signing key: the PEM of an ECDSA P-256 private key; one-line error otherwise."""
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{where}: not the PEM of an unencrypted private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"{where}: must be an ECDSA P-256 private key (SendGrid signs with P-256)")
    return _pem(key)


def load_or_make(path: Path, sendgrid: str | None = None) -> WebhookKeys:
    """The keys kept in ``path``, made (and written, 0600) when it is not there yet; ``sendgrid`` (a
    configured key's PEM) replaces the SendGrid key either way."""
    configured = sendgrid_key_pem(sendgrid) if sendgrid else None
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            keys = WebhookKeys(
                sendgrid=data["sendgrid"].encode(),
                sns_key=data["sns_key"].encode(),
                sns_cert=data["sns_cert"].encode(),
                sns_secret=data["sns_secret"],
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"webhook keys {path}: unreadable ({type(exc).__name__}); remove it") from None
        if configured and configured != keys.sendgrid:
            keys = replace(keys, sendgrid=configured)
            _write(path, keys)
        return keys
    keys = WebhookKeys.make(configured)
    _write(path, keys)
    return keys


def _write(path: Path, keys: WebhookKeys) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(keys.as_json())
    tmp.replace(path)  # whole or not at all: a worker never reads half of it


@functools.cache
def _wrong_keys() -> WebhookKeys:
    """Keys no receiver was given (one set per process, made the first time a bad signature is due)."""
    return WebhookKeys.make()


@dataclass(frozen=True)
class Signer:
    """What one POST is signed with."""

    url: str  # the webhook URL as configured (with its userinfo: Mandrill signs it whole)
    signing_key: str
    keys: WebhookKeys | None
    control: str  # the control API's base URL (SNS's SigningCertURL and SubscribeURL live there)
    sns_signature_version: int = 1

    def wrong(self) -> Signer:
        """The same signer with every secret replaced (the bad_signature fault)."""
        keys = None if self.keys is None else replace(_wrong_keys(), sns_secret=self.keys.sns_secret)
        return replace(self, signing_key=self.signing_key + WRONG, keys=keys)


def auth_headers(auth: Any, *, wrong: bool = False) -> dict[str, str]:
    """The headers a WebhookSpec's ``auth`` (basic / bearer / headers) puts on every POST; ``wrong``:
    every credential altered (the bad_signature fault on a receiver that checks credentials)."""
    if auth is None:
        return {}
    bad = WRONG if wrong else ""
    out: dict[str, str] = {}
    if auth.basic is not None:
        out["Authorization"] = "Basic " + base64.b64encode((auth.basic + bad).encode()).decode()
    elif auth.bearer is not None:
        out["Authorization"] = f"Bearer {auth.bearer}{bad}"
    for name, value in auth.headers.items():
        out[name] = value + bad
    return out


def url_with_wrong_password(url: str) -> str:
    """``url`` with its userinfo's password altered (the bad_signature fault on basic auth in the URL)."""
    return _with_password(url, lambda password: password + WRONG)


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced by ``***`` (what the ledger may show)."""
    return _with_password(url, lambda _: "***")


def _with_password(url: str, change: Callable[[str], str]) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{change(parts.password)}@{host}"))
