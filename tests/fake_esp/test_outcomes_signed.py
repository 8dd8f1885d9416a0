"""Outcome addresses and suppression for the ESPs whose anymail tracking views verify a signature
(MailerSend, Resend, SparkPost, Postal): messages sent through anymail's backends to the real fake ESP,
each webhook the fake posted verified and parsed by anymail's view with the secret the fake signed with;
each recipient's events are those its address names, in anymail's types (where anymail knows the
event: it has none for Postal's MessageLoaded nor Resend's email.suppressed), and the second send to
a hard-bounced address gets the ESP's suppressed answer."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

import pytest

from tests.fake_esp.http_support import Receiver, start_esp, wait_until
from tests.fake_esp.test_anymail_webhooks import secrets_for, view_class
from tests.fake_esp.test_outcomes import PATTERNS, send

# anymail's event types per outcome address; then for the second send to the hard-bounced address, the
# anymail status of the send and the event types posted for it.
EXPECT: dict[str, tuple[dict[str, set[str]], str, list[str]]] = {
    "mailersend": (
        # MailerSend has no deferred event (the defer+ recipient's deferral is not posted).
        {"bounce": {"bounced"}, "softbounce": {"bounced"}, "defer": {"delivered"},
         "complaint": {"delivered", "complained"}, "unsubscribe": {"delivered", "unsubscribed"},
         "click": {"delivered", "opened", "clicked"}},
        "rejected", [],  # refused at send: ALL_SUPPRESSED, no event
    ),
    "resend": (
        # Resend has no unsubscribe event.
        {"bounce": {"bounced"}, "softbounce": {"bounced"}, "defer": {"deferred", "delivered"},
         "complaint": {"delivered", "complained"}, "unsubscribe": {"delivered"},
         "click": {"delivered", "opened", "clicked"}},
        "queued", ["unknown"],  # email.suppressed: anymail does not know it
    ),
    "sparkpost": (
        {"bounce": {"bounced"}, "softbounce": {"bounced"}, "defer": {"deferred", "delivered"},
         "complaint": {"delivered", "complained"}, "unsubscribe": {"delivered", "unsubscribed"},
         "click": {"delivered", "opened", "clicked"}},
        "queued", ["rejected"],  # policy_rejection
    ),
    "postal": (
        # HardFail is anymail's "failed"; Postal has no complaint or unsubscribe events; anymail takes
        # MessageLoaded (the open) for "unknown".
        {"bounce": {"failed"}, "softbounce": {"bounced"}, "defer": {"deferred", "delivered"},
         "complaint": {"delivered"}, "unsubscribe": {"delivered"},
         "click": {"delivered", "unknown", "clicked"}},
        "queued", ["queued"],  # MessageHeld, status Held
    ),
}  # fmt: skip


def parse(api: str, posts: list[tuple[dict[str, str], bytes]], config: dict) -> dict[str, list[str]]:
    """{recipient: [anymail event types]}: each POST verified and parsed by ``api``'s anymail view."""
    from anymail.signals import tracking
    from django.test import RequestFactory
    from django.test.utils import override_settings

    got: dict[str, list[str]] = defaultdict(list)

    def keep(sender: Any, event: Any, esp_name: str, **kw: Any) -> None:
        got[event.recipient].append(event.event_type)

    tracking.connect(keep, weak=False)
    try:
        for headers, body in posts:
            extra = {
                k: v
                for k, v in headers.items()
                if k.lower() not in {"content-length", "content-type", "host"}
            }
            request = RequestFactory().post(
                "/hook", data=body, content_type=headers["Content-Type"], headers=extra
            )
            kwargs = dict(config)
            with override_settings(ANYMAIL=kwargs.pop("ANYMAIL", {})):
                assert view_class(api).as_view(**kwargs)(request).status_code == 200, body[:300]
    finally:
        tracking.disconnect(keep)
    return got


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")
@pytest.mark.parametrize("api", list(EXPECT))
def test_outcome_addresses_through_the_signed_anymail_views(api, tmp_path):
    from tests.fake_esp.django_setup import configure

    configure()
    kinds, status, again = EXPECT[api]
    signing_key, good, _ = secrets_for(api)
    tag = uuid.uuid4().hex[:6]
    addr = {p: f"{p}+{api}-{tag}@example.test" for p in PATTERNS}
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, signing_key=signing_key)
        try:
            for to in addr.values():
                send(esp, api, [to])
            n = sum(len(kinds[p]) for p in PATTERNS)
            wait_until(lambda: len(rx.posts) >= n)
            second = send(esp, api, [addr["bounce"]])
            wait_until(lambda: len(rx.posts) >= n + len(again))
        finally:
            esp.stop()
        posts = list(rx.posts)
    got = parse(api, posts[:n], good)
    assert {r: set(t) for r, t in got.items()} == {addr[p]: kinds[p] for p in PATTERNS}
    assert second.recipients[addr["bounce"]].status == status
    assert parse(api, posts[n:], good) == ({addr["bounce"]: again} if again else {})
    assert "Traceback" not in (tmp_path / "esp.log").read_text()
