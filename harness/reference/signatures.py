"""Webhook signature checks of the reference pipeline's receiver: one small function per webhook format
that signs its posts, as a production receiver verifies them before it counts anything.

``verify(fmt, body, headers, key)`` is True when the post carries a valid signature made with ``key``,
and for a format this module knows no check for (unsigned formats: nothing to verify). Each check uses
the format's own signing code (mailstorm.fake_esp.esps.<name>.webhook) or its published recipe:

- mailgun: ``signature.signature`` in the body, hex HMAC-SHA256 of ``timestamp + token``;
- mailersend: the ``Signature`` header, hex HMAC-SHA256 of the raw body;
- resend (Svix): ``svix-signature: v1,<base64 HMAC-SHA256 of "{svix-id}.{svix-timestamp}.{body}">``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

import orjson

from mailstorm.fake_esp.esps.mailersend.webhook import sign as mailersend_sign
from mailstorm.fake_esp.esps.resend.webhook import svix_headers

Check = Callable[[bytes, Mapping[str, str], str], bool]


def _mailgun(body: bytes, headers: Mapping[str, str], key: str) -> bool:
    try:
        sig = orjson.loads(body)["signature"]
        signed = (str(sig["timestamp"]) + str(sig["token"])).encode()
        given = str(sig["signature"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return hmac.compare_digest(hmac.new(key.encode(), signed, hashlib.sha256).hexdigest(), given)


def _mailersend(body: bytes, headers: Mapping[str, str], key: str) -> bool:
    return hmac.compare_digest(mailersend_sign(body, key), headers.get("Signature", ""))


def _resend(body: bytes, headers: Mapping[str, str], key: str) -> bool:
    msg_id, ts = headers.get("svix-id", ""), headers.get("svix-timestamp", "")
    if not msg_id or not ts.isdigit():
        return False
    want = svix_headers(msg_id, body, key, int(ts))["svix-signature"].removeprefix("v1,")
    given = [s.removeprefix("v1,") for s in headers.get("svix-signature", "").split() if s.startswith("v1,")]
    return any(hmac.compare_digest(want, g) for g in given)


CHECKS: dict[str, Check] = {"mailgun": _mailgun, "mailersend": _mailersend, "resend": _resend}


def verify(fmt: str, body: bytes, headers: Mapping[str, str], key: str) -> bool:
    """True when ``body`` (with ``headers``) is signed with ``key`` as format ``fmt`` signs, or ``fmt``
    signs nothing this module checks."""
    check = CHECKS.get(fmt)
    return check is None or check(body, headers, key)
