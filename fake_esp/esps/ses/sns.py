"""The fake SNS that carries SES's events: signed messages, the subscription handshake, and the two URLs
it serves on the control API.

Signing (SignatureVersion 1: SHA1withRSA, SNS's default; 2: SHA256withRSA): the string to sign is, for
each field in this order that the message has, its name, a newline, its value, a newline: Notification:
Message, MessageId, Subject (when present), Timestamp, TopicArn, Type; SubscriptionConfirmation and
UnsubscribeConfirmation: Message, MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type. The
signature is base64 of the RSA PKCS#1 v1.5 signature by the run's SNS key, whose self-signed certificate
is served at ``SigningCertURL`` (``GET <control>/sns/SimpleNotificationService-mailstorm.pem``).

Subscription: the first POST to a new endpoint is a SubscriptionConfirmation whose ``SubscribeURL`` is
``<control>/sns?Action=ConfirmSubscription&TopicArn=...&Token=...``; the endpoint confirms with a GET on
it, or (what django-anymail does, through boto3's SNS client pointed at ``<control>/sns``) a POST of the
same form fields. The token is an HMAC of the topic and endpoint under the run's SNS secret, so any worker
or process of the ESP can check it. Each confirmation is an ``esp.subscription`` record (action
``confirm``, ok: the token was right) in the ESP's ``esp[-<name>]-sns`` ledger; each SubscriptionConfirmation
POST one with action ``request``. The control API serves these paths without its token (they are the
ESP's public side: SNS's endpoints need no credentials but the subscription token). Each worker process
of an ESP (``--processes N``) posts its own SubscriptionConfirmation, before its first SES event: a
receiver confirms N times, harmlessly.
References: https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html,
https://docs.aws.amazon.com/sns/latest/dg/sns-message-and-json-formats.html,
https://docs.aws.amazon.com/sns/latest/api/API_ConfirmSubscription.html.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import orjson
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from mailstorm.fake_esp.esps.ses.webhook import SNS_TOPIC
from mailstorm.fake_esp.webhooks.signing import redact_url
from mailstorm.ledger import EspSubscription

if TYPE_CHECKING:
    from collections.abc import Callable

    from mailstorm.fake_esp.webhooks.signing import Signer, WebhookKeys
    from mailstorm.ledger import Record

TOPIC = SNS_TOPIC
CERT_PATH = "/sns/SimpleNotificationService-mailstorm.pem"
CONFIRM_PATH = "/sns"
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                                 "Type"),
}  # fmt: skip
_FIELDS["UnsubscribeConfirmation"] = _FIELDS["SubscriptionConfirmation"]
_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"


def string_to_sign(message: dict[str, Any]) -> str:
    """What SNS signs of ``message`` (by its Type), as AWS documents it."""
    fields = _FIELDS[message["Type"]]
    return "".join(f"{k}\n{message[k]}\n" for k in fields if message.get(k) is not None)


def signed(message: dict[str, Any], signer: Signer) -> dict[str, Any]:
    """``message`` with SignatureVersion, SigningCertURL and Signature as SNS sends it."""
    assert signer.keys is not None
    version = str(signer.sns_signature_version)
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # v1 is SHA1withRSA, as SNS signs
    sig = signer.keys.sns_private.sign(string_to_sign(message).encode(), padding.PKCS1v15(), digest)
    return message | {
        "SignatureVersion": version,
        "Signature": base64.b64encode(sig).decode(),
        "SigningCertURL": signer.control + CERT_PATH,
    }


def unsubscribe_url(control: str) -> str:
    """A notification's UnsubscribeURL (the fake answers it as an unsupported action)."""
    return f"{control}{CONFIRM_PATH}?" + urlencode({"Action": "Unsubscribe", "SubscriptionArn": TOPIC})


def token(keys: WebhookKeys, topic: str, endpoint: str) -> str:
    """The subscription token of ``endpoint`` on ``topic`` (checkable by every process of the ESP)."""
    mac = hmac.new(keys.sns_secret.encode(), f"{topic}\n{endpoint}".encode(), hashlib.sha256)
    return mac.hexdigest() + "0" * 64  # SNS tokens are long; receivers treat them as opaque


def headers(message: dict[str, Any]) -> dict[str, str]:
    """The HTTP headers SNS sends with ``message``."""
    return {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": message["Type"],
        "x-amz-sns-message-id": message["MessageId"],
        "x-amz-sns-topic-arn": message["TopicArn"],
    }


def confirmation(signer: Signer, when: str) -> tuple[bytes, dict[str, str]]:
    """The signed SubscriptionConfirmation POST for ``signer.url``."""
    assert signer.keys is not None
    tok = token(signer.keys, TOPIC, signer.url)
    query = urlencode({"Action": "ConfirmSubscription", "TopicArn": TOPIC, "Token": tok})
    message = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": tok,
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\n"
        "To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"{signer.control}{CONFIRM_PATH}?{query}",
        "Timestamp": when,
    }
    message = signed(message, signer)
    return orjson.dumps(message), headers(message)


def routes(keys: WebhookKeys, endpoint: str, write: Callable[[Record], object]) -> list[web.RouteDef]:
    """The fake SNS's URLs for the control API: the signing certificate, and ConfirmSubscription of
    ``endpoint`` (the ESP's webhook URL), each confirmation recorded with ``write``."""

    async def certificate(request: web.Request) -> web.Response:
        return web.Response(body=keys.sns_cert, content_type="application/x-x509-ca-cert")

    async def confirm(request: web.Request) -> web.Response:
        params = dict(request.query)
        if request.method == "POST":
            params |= {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if params.get("Action") != "ConfirmSubscription":
            return _error(400, "InvalidAction", f"unsupported Action {params.get('Action')!r}")
        topic, tok = params.get("TopicArn", ""), params.get("Token", "")
        ok = hmac.compare_digest(token(keys, topic, endpoint), tok)
        where = redact_url(endpoint)
        write(EspSubscription(api="ses", action="confirm", topic=topic, url=where, ok=ok))
        if not ok:
            return _error(400, "InvalidParameter", "Invalid token")
        arn = f"{topic}:{uuid.uuid5(uuid.NAMESPACE_URL, endpoint)}"
        body = (
            f'<ConfirmSubscriptionResponse xmlns="{_XMLNS}"><ConfirmSubscriptionResult>'
            f"<SubscriptionArn>{arn}</SubscriptionArn></ConfirmSubscriptionResult>"
            f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
            "</ConfirmSubscriptionResponse>"
        )
        return web.Response(text=body, content_type="text/xml")

    return [web.get(CERT_PATH, certificate), web.get(CONFIRM_PATH, confirm), web.post(CONFIRM_PATH, confirm)]


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        f'<ErrorResponse xmlns="{_XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )
    return web.Response(status=status, text=body, content_type="text/xml")
