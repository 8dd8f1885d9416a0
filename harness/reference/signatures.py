"""Webhook signature checks of the reference pipeline's receiver: one small function per webhook format
that signs its posts, as a production receiver verifies them before it counts anything.

``verify(fmt, body, headers, key, url)`` is True when the post (to ``url``, as the ESP was told it)
carries a valid signature made with ``key``, and for a format this module knows no check for (unsigned
formats; SES's SNS messages, signed with a certificate this receiver does not fetch). Each check uses the
format's own signing code (mailstorm.fake_esp.esps.<name>.webhook) or its published recipe:

- mailgun: ``signature.signature`` in the body, hex HMAC-SHA256 of ``timestamp + token``;
- mailersend: the ``Signature`` header, hex HMAC-SHA256 of the raw body;
- resend (Svix): ``svix-signature: v1,<base64 HMAC-SHA256 of "{svix-id}.{svix-timestamp}.{body}">``;
- mandrill: ``X-Mandrill-Signature``, base64 HMAC-SHA1 of the URL + the sorted form fields;
- sendgrid (Signed Event Webhook): ECDSA P-256/SHA-256 of timestamp + body, checked with the run's
  verification key (``key``: base64 DER, as SendGrid shows it; run.json ``webhook_keys``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Mapping

import orjson

from mailstorm.fake_esp.esps.mailersend.webhook import sign as mailersend_sign
from mailstorm.fake_esp.esps.mailgun.webhook import sign as mailgun_sign
from mailstorm.fake_esp.esps.mandrill.webhook import signature as mandrill_signature
from mailstorm.fake_esp.esps.resend.webhook import svix_headers
from mailstorm.fake_esp.esps.sendgrid.webhook import SIGNATURE, TIMESTAMP

Check = Callable[[bytes, Mapping[str, str], str, str], bool]


def _mailgun(body: bytes, headers: Mapping[str, str], key: str, url: str) -> bool:
    try:
        sig = orjson.loads(body)["signature"]
        want = mailgun_sign(str(sig["timestamp"]), str(sig["token"]), key)
        given = str(sig["signature"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return hmac.compare_digest(want, given)


def _mailersend(body: bytes, headers: Mapping[str, str], key: str, url: str) -> bool:
    return hmac.compare_digest(mailersend_sign(body, key), headers.get("Signature", ""))


def _resend(body: bytes, headers: Mapping[str, str], key: str, url: str) -> bool:
    msg_id, ts = headers.get("svix-id", ""), headers.get("svix-timestamp", "")
    if not msg_id or not ts.isdigit():
        return False
    want = svix_headers(msg_id, body, key, int(ts))["svix-signature"].removeprefix("v1,")
    given = [s.removeprefix("v1,") for s in headers.get("svix-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(want, g) for g in given)


def _mandrill(body: bytes, headers: Mapping[str, str], key: str, url: str) -> bool:
    try:
        want = mandrill_signature(url, body, key)
    except (UnicodeDecodeError, ValueError):
        return False
    return hmac.compare_digest(want, headers.get("X-Mandrill-Signature", ""))


def _sendgrid(body: bytes, headers: Mapping[str, str], key: str, url: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public = serialization.load_der_public_key(base64.b64decode(key))
        signature = base64.b64decode(headers.get(SIGNATURE, ""), validate=True)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(public, ec.EllipticCurvePublicKey) or not signature:
        return False
    try:
        public.verify(signature, headers.get(TIMESTAMP, "").encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


CHECKS: dict[str, Check] = {
    "mailgun": _mailgun, "mailersend": _mailersend, "resend": _resend, "mandrill": _mandrill,
    "sendgrid": _sendgrid,
}  # fmt: skip


def verify(fmt: str, body: bytes, headers: Mapping[str, str], key: str, url: str = "") -> bool:
    """True when ``body`` (with ``headers``, posted to ``url``) is signed with ``key`` as format ``fmt``
    signs, or ``fmt`` signs nothing this module checks."""
    check = CHECKS.get(fmt)
    return check is None or check(body, headers, key, url)
