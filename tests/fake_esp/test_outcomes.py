"""Per-recipient outcomes and suppression lists, end to end: messages sent through django-anymail's ESP
backends to the real fake ESP (HTTP APIs, loopback) addressed to outcome addresses
(``bounce+x@example.test``, SES's mailbox simulator), the webhooks the fake posts received on a loopback
receiver and fed to anymail's own tracking views: each recipient's events are the ones its address
names, as anymail's ``event_type``; a second send to a hard-bounced address gets that ESP's suppressed
answer (Postmark refuses it at send, 406; Mandrill answers the recipient rejected; the others accept it;
all but Postmark post their dropped event); the esp.outcome ledger records tell the same truth."""

from __future__ import annotations

import multiprocessing
import uuid
from collections import defaultdict
from typing import Any

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.shared import SharedState
from mailstorm.fake_esp.webhooks import EVENTS
from mailstorm.fake_esp.webhooks.outcomes import Outcomes, address_events
from mailstorm.fake_esp.webhooks.spec import EventMix
from mailstorm.fake_esp.webhooks.suppression import Suppressions
from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.http_support import Receiver, start_esp, wait_until
from tests.fake_esp.test_anymail_tracking import ESPS, WEBHOOK_AUTH, parse, verifying
from tests.fake_esp.test_https_sdks import ANYMAIL, UNSUPPORTED, anymail_settings

PATTERNS = ("bounce", "softbounce", "defer", "complaint", "unsubscribe", "click")
UNSUB = {"sendgrid", "mailgun", "brevo", "mandrill", "postmark"}  # those that suppress on an unsubscribe


def expected(fmt: str, pattern: str) -> set[str]:
    """anymail's event types for the events of an outcome address at ESP ``fmt``."""
    done = "sent" if fmt == "mandrill" else "delivered"  # Mandrill's "send" is anymail's "sent"
    out = {
        "bounce": {"bounced"},
        "softbounce": {"bounced"},
        "defer": {"deferred", done},
        "complaint": {done, "complained"},
        "unsubscribe": {done, "unsubscribed"},
        "click": {done, "opened", "clicked"},
    }[pattern]
    if fmt == "ses" and pattern in ("defer", "unsubscribe"):
        # anymail has no mapping for SES's DeliveryDelay and Subscription events: "unknown".
        out = {"unknown" if e in ("deferred", "unsubscribed") else e for e in out}
    return out


# A send to a hard-bounced address: the event each ESP posts for it, as anymail types it (Mailgun's
# failed/suppress-bounce and SES's Bounce/OnAccountSuppressionList are bounces to anymail).
SUPPRESSED = {"sendgrid": "rejected", "mailgun": "bounced", "brevo": "rejected", "mailjet": "rejected",
              "mandrill": "rejected", "ses": "bounced"}  # fmt: skip


def send(esp: EspProcess, api: str, to: list[str]) -> Any:
    """One message through anymail's ``api`` backend; its anymail_status (the send may be refused)."""
    from anymail.exceptions import AnymailRecipientsRefused
    from django.core.mail import EmailMessage
    from django.test.utils import override_settings

    settings = {
        "EMAIL_BACKEND": f"anymail.backends.{ANYMAIL[api]}.EmailBackend",
        **anymail_settings(esp, api),
    }
    with override_settings(**settings):
        msg = EmailMessage("s", "b", "app@example.test", to)
        if api not in ("mailersend", "postal"):  # their APIs have no metadata
            msg.metadata = {"mailstorm_id": f"out-{api}-{uuid.uuid4().hex[:8]}"}
        try:
            msg.send()
        except AnymailRecipientsRefused:
            pass  # every recipient refused: the status says so
    return msg.anymail_status


def types_by_rcpt(rx: Receiver, esp: EspProcess, start: int = 0) -> dict[tuple[str, str], list[str]]:
    """{(format, recipient): [anymail event types]} of the posts ``rx`` received (from the ``start``th
    on), each fed to its ESP's anymail view with every signature check on."""
    got: dict[tuple[str, str], list[str]] = defaultdict(list)
    for fmt, ev in parse(list(rx.posts)[start:], verifying(esp, hook_url(rx))):
        got[(fmt, ev.recipient)].append(ev.event_type)
    return got


def hook_url(rx: Receiver) -> str:
    """The receiver's URL as the ESP is told it: with the webhook's basic-auth credentials."""
    return rx.url.replace("http://", f"http://{WEBHOOK_AUTH}@")


def outcomes(esp: EspProcess) -> list[dict]:
    return list(LedgerReader(esp.ledger_dir).records([Kind.ESP_OUTCOME]))


@pytest.fixture
def receiver_esp(tmp_path):
    from tests.fake_esp.django_setup import configure

    configure()
    with Receiver() as rx:
        esp = start_esp(tmp_path, hook_url(rx))
        try:
            yield rx, esp
        finally:
            esp.stop()
    assert "Traceback" not in (tmp_path / "esp.log").read_text()


@UNSUPPORTED
def test_outcome_addresses_give_their_events_and_a_hard_bounce_suppresses(receiver_esp):
    rx, esp = receiver_esp
    tag = uuid.uuid4().hex[:6]
    addr = {(api, p): f"{p}+{api}-{tag}@example.test" for api in ESPS for p in PATTERNS}
    for (api, _), to in addr.items():
        send(esp, api, [to])
    want = {(api, to): expected(api, p) for (api, p), to in addr.items()}
    n = sum(len(v) for v in want.values())
    wait_until(lambda: len(rx.events()) >= n, timeout=30)
    got = types_by_rcpt(rx, esp)
    assert {k: set(v) for k, v in got.items()} == want
    assert all(len(v) == len(set(v)) for v in got.values()), "each event posted once"
    first = {(r["api"], r["rcpt"]): r for r in outcomes(esp)}
    for (api, p), to in addr.items():
        rec = first[(api, to)]
        assert rec["source"] == "address"
        assert rec["outcome"] == {"bounce": "bounce", "softbounce": "soft_bounce"}.get(p, "delivered")
        assert rec.get("suppresses", False) is (
            p in ("bounce", "complaint") or (p == "unsubscribe" and api in UNSUB)
        )

    # The second send to each hard-bounced address: that ESP's suppressed answer.
    before = len(rx.posts)
    statuses = {api: send(esp, api, [addr[(api, "bounce")]]) for api in ESPS}
    assert statuses["postmark"].recipients[addr[("postmark", "bounce")]].status == "rejected"
    assert statuses["postmark"].message_id is None
    # Mandrill accepts it and answers the recipient "rejected" (reject_reason hard-bounce), then posts
    # its reject event; the others answer their usual success and post their dropped event.
    assert statuses["mandrill"].recipients[addr[("mandrill", "bounce")]].status == "rejected"
    others = [
        statuses[api].recipients[addr[(api, "bounce")]].status for api in SUPPRESSED if api != "mandrill"
    ]
    assert set(others) <= {"queued", "sent"}
    wait_until(lambda: len(rx.posts) >= before + len(SUPPRESSED), timeout=30)
    again = types_by_rcpt(rx, esp, before)
    assert {api: again[(api, addr[(api, "bounce")])] for api in SUPPRESSED} == {
        api: [kind] for api, kind in SUPPRESSED.items()
    }
    dropped = [r for r in outcomes(esp) if r["outcome"] == "dropped"]
    assert sorted(r["api"] for r in dropped) == sorted(ESPS)
    assert all(r["source"] == "suppressed" and r["detail"] == "bounce" for r in dropped)
    (pm,) = [r for r in dropped if r["api"] == "postmark"]
    assert pm["esp_id"] is None and pm["events"] == []  # refused at send: no message, no event
    refusals = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["api"] == "postmark"]
    assert [(r["code"], r["text"]) for r in refusals] == [(422, "every recipient suppressed")]


@UNSUPPORTED
@pytest.mark.parametrize(("api", "sent"), [("postmark", "sent"), ("mailersend", "queued")])
def test_an_esp_that_refuses_at_send_names_the_suppressed_and_sends_to_the_others(receiver_esp, api, sent):
    """Postmark and MailerSend refuse suppressed recipients at send: alone, the send is refused (Postmark
    422 ErrorCode 406; MailerSend 202 ALL_SUPPRESSED, no message id); among others, the message goes to
    those and the answer names the suppressed one. anymail reads both as the recipient "rejected"; only
    the others have events."""
    rx, esp = receiver_esp
    tag = uuid.uuid4().hex[:6]
    bounced, fresh = f"bounce+{api}-{tag}@example.test", f"fresh-{tag}@example.test"
    send(esp, api, [bounced])
    wait_until(lambda: len(rx.events()) >= 1)
    alone = send(esp, api, [bounced])
    assert alone.message_id is None and alone.recipients[bounced].status == "rejected"
    both = send(esp, api, [bounced, fresh])
    assert {r: s.status for r, s in both.recipients.items()} == {bounced: "rejected", fresh: sent}
    wait_until(lambda: len(rx.events()) >= 2)
    assert sorted((e["rcpt"], e["event"]) for e in rx.events()) == [(bounced, "bounce"), (fresh, "delivered")]
    (acc,) = [
        r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if fresh in r.get("to", [])
    ]
    assert acc["to"] == [fresh] and acc["rcpts"] == 1
    drops = [(r["rcpt"], r["esp_id"], r["detail"]) for r in outcomes(esp) if r["outcome"] == "dropped"]
    assert drops == [(bounced, None, "bounce")] * 2


SIMULATOR = {
    "success": {"delivered"},
    "bounce": {"bounced"},
    "ooto": {"delivered"},
    "complaint": {"delivered", "complained"},
    "suppressionlist": {"bounced"},
}


@UNSUPPORTED
def test_the_ses_mailbox_simulator_addresses(receiver_esp):
    """SES's mailbox simulator, through anymail's SES backend and its SNS tracking view: each address its
    documented outcome (suppressionlist@: a Permanent/Suppressed bounce); the simulator's bounces do not
    suppress (SES keeps them off the account's list), so a second send to bounce@ bounces again."""
    rx, esp = receiver_esp
    for local in SIMULATOR:
        send(esp, "ses", [f"{local}@simulator.amazonses.com"])
    n = sum(len(v) for v in SIMULATOR.values())
    wait_until(lambda: len(rx.events()) >= n)
    got = types_by_rcpt(rx, esp)
    assert {k: set(v) for k, v in got.items()} == {
        ("ses", f"{local}@simulator.amazonses.com"): kinds for local, kinds in SIMULATOR.items()
    }
    raw = {e["rcpt"]: e["raw"] for e in rx.events()}
    import orjson

    bounce = orjson.loads(raw["suppressionlist@simulator.amazonses.com"]["Message"])["bounce"]
    assert (bounce["bounceType"], bounce["bounceSubType"]) == ("Permanent", "Suppressed")
    send(esp, "ses", ["bounce+again@simulator.amazonses.com"])
    send(esp, "ses", ["bounce+again@simulator.amazonses.com"])
    wait_until(lambda: len(rx.events()) >= n + 2)
    assert types_by_rcpt(rx, esp)[("ses", "bounce+again@simulator.amazonses.com")] == ["bounced"] * 2
    recs = [r for r in outcomes(esp) if r["rcpt"].startswith("bounce")]
    assert [r["outcome"] for r in recs] == ["bounce"] * 3 and not any(r.get("suppresses") for r in recs)


# -- the draws and the lists, without the network ----------------------------------------------------


def test_rates_are_drawn_per_recipient_seeded_and_independent_of_order():
    """Each recipient's events come from its own seeded draw: the same whatever order the messages come
    in, different with another seed; over many recipients each kind's share is near its rate."""
    mix = EventMix(bounce=0.05, soft_bounce=0.05, deferred=0.2, open=0.4, click=0.5, complaint=0.02,
                   unsubscribe=0.03)  # fmt: skip
    msgs = [{"id": f"m-{i}", "to": [f"u{i}@example.test"]} for i in range(4000)]

    def fates(seed: int, order: list[dict]) -> dict[str, tuple[str, ...]]:
        o = Outcomes(mix, seed, Suppressions())
        return {m["to"][0]: o.decide("sendgrid", m, m["to"][0]).events for m in order}

    a = fates(7, msgs)
    assert a == fates(7, list(reversed(msgs)))
    assert a != fates(8, msgs)
    n = len(a)
    share = {k: sum(k in ev for ev in a.values()) / n for k in EVENTS}
    delivered = 1 - mix.bounce - (1 - mix.bounce) * mix.soft_bounce
    want = {"bounce": mix.bounce, "deferred": mix.deferred, "delivered": delivered,
            "open": delivered * mix.open, "click": delivered * mix.open * mix.click,
            "complaint": delivered * mix.complaint, "unsubscribe": delivered * mix.unsubscribe}  # fmt: skip
    for kind, p in want.items():
        assert abs(share[kind] - p) < 4 * (p * (1 - p) / n) ** 0.5 + 0.002, (kind, share[kind], p)


def test_a_suppressed_recipient_is_dropped_with_what_suppressed_it():
    o = Outcomes(EventMix(complaint=1.0), 0, Suppressions())
    first = o.decide("mailgun", {"id": "a"}, "Rcpt@example.test")
    assert first.events == ("delivered", "complaint") and first.suppresses == "complaint"
    again = o.decide("mailgun", {"id": "b"}, "rcpt@EXAMPLE.test")
    assert (again.events, again.source, again.detail) == (("dropped",), "suppressed", "complaint")
    assert again.final == "dropped"
    assert o.decide("sendgrid", {"id": "c"}, "rcpt@example.test").source == "mix"  # another ESP's list


def test_the_suppression_lists_are_shared_by_the_workers():
    """With --processes N the lists live in the workers' shared memory: a recipient one forked worker
    suppressed is suppressed in another."""
    shared = SharedState(slots=1024)
    lists = Suppressions(shared)
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=lists.add, args=("postmark", "bounce+w1@example.test", "bounce"))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert lists.why("postmark", "bounce+w1@example.test") == "bounce"
    assert lists.why("sendgrid", "bounce+w1@example.test") is None


@pytest.mark.parametrize(
    ("rcpt", "events"),
    [
        ("bounce+x@example.test", ("bounce",)),
        ("BOUNCE@simulator.amazonses.com", ("bounce",)),
        ("click+a+b@example.test", ("delivered", "open", "click")),
        ("bounce@example.test", None),  # a bare word needs the simulator's domain
        ("bouncer+x@example.test", None),
        ("x+bounce@example.test", None),
    ],
)
def test_outcome_addresses(rcpt, events):
    got = address_events(rcpt)
    assert (got[0] if got else None) == events


def test_a_suppression_holds_across_worker_processes(tmp_path):
    """--processes 2: the hard bounce one worker drew suppresses the recipient for the other too (the
    lists live in the workers' shared memory): every later send to it over new connections, spread
    across both workers by the kernel (24 of them: all on one worker has odds 2^-23), is refused with
    Postmark's 406."""
    import requests
    import yaml

    from mailstorm.ports import free_port

    with Receiver() as rx:
        cfg = tmp_path / "webhooks.yaml"
        cfg.write_text(yaml.safe_dump({"url": rx.url, "seed": 1}))
        esp = EspProcess(
            tmp_path / "ledger", http_port=free_port(), processes=2, extra_args=["--webhooks", str(cfg)],
            log_path=tmp_path / "esp.log",
        ).start()  # fmt: skip
        try:
            body = {
                "From": "app@example.test",
                "To": "bounce+w@example.test",
                "Subject": "s",
                "TextBody": "b",
            }
            headers = {"X-Postmark-Server-Token": "pm-token", "Connection": "close"}

            def post() -> requests.Response:
                return requests.post(f"{esp.http_url}/email", json=body, headers=headers, timeout=10)

            assert post().status_code == 200
            answers = [post() for _ in range(24)]
        finally:
            esp.stop()
    assert [(a.status_code, a.json()["ErrorCode"]) for a in answers] == [(422, 406)] * 24
    sessions = {
        r["session"].partition("-")[0] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED])
    }
    assert len(sessions) == 2, "both workers answered"


@pytest.mark.parametrize(
    ("profile", "dropped"),
    [("sendgrid", {"event": "dropped", "reason": "Spam Reporting Address"}),
     ("postmark", {"RecordType": "Bounce", "Type": "SMTPApiError", "TypeCode": 100007})],
)  # fmt: skip
def test_over_smtp_a_complaint_suppresses_and_the_next_send_is_dropped(tmp_path, profile, dropped):
    """SMTP acceptances get outcomes too (the webhook format is the profile's): a complaint+ address is
    delivered then complains, and the next message to it is dropped with the ESP's event for that
    (SendGrid's dropped, Spam Reporting Address; Postmark, which refuses over its API, a Bounce
    SMTPApiError over SMTP)."""
    import smtplib

    rcpt = f"complaint+smtp-{uuid.uuid4().hex[:6]}@example.test"
    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url, profile=profile)
        try:
            for i in range(2):
                with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as smtp:
                    head = f"From: app@example.test\r\nTo: {rcpt}\r\nX-Mailstorm-Id: smtp-{i}\r\n"
                    msg = head + "Subject: s\r\n\r\nb\r\n"
                    smtp.sendmail("app@example.test", [rcpt], msg)
                wait_until(lambda i=i: len(rx.events()) >= 2 + i)
        finally:
            esp.stop()
        got = [(e["id"], e["event"]) for e in rx.events()]
        last = rx.events()[-1]["raw"]
    assert got == [("smtp-0", "delivered"), ("smtp-0", "complaint"), ("smtp-1", "dropped")]
    last = last[0] if isinstance(last, list) else last
    assert {k: last.get(k) for k in dropped} == dropped
    recs = [(r["id"], r["outcome"], r["source"]) for r in outcomes(esp)]
    assert recs == [("smtp-0", "delivered", "address"), ("smtp-1", "dropped", "suppressed")]


def test_postmark_batch_answers_each_message(tmp_path):
    """/email/batch: a message whose every recipient is inactive gets its own 406 in the 200 array (and
    is not sent); the others are sent, one naming its inactive recipient."""
    import requests

    tag = uuid.uuid4().hex[:6]
    bounced, fresh = f"bounce+b-{tag}@example.test", f"fresh-{tag}@example.test"
    headers = {"X-Postmark-Server-Token": "pm-token"}

    def msg(to: str) -> dict[str, str]:
        return {"From": "app@example.test", "To": to, "Subject": "s", "TextBody": "b"}

    with Receiver() as rx:
        esp = start_esp(tmp_path, rx.url)
        try:
            url = f"{esp.http_url}/email/batch"
            assert requests.post(url, json=[msg(bounced)], headers=headers, timeout=10).status_code == 200
            wait_until(lambda: len(rx.events()) >= 1)
            only = requests.post(url, json=[msg(bounced)], headers=headers, timeout=10)
            mixed = requests.post(url, json=[msg(bounced), msg(f"{bounced}, {fresh}"), msg(fresh)],
                                  headers=headers, timeout=10)  # fmt: skip
            wait_until(lambda: len(rx.events()) >= 3)
        finally:
            esp.stop()
    assert only.status_code == 200 and [a["ErrorCode"] for a in only.json()] == [406]
    assert f"Found inactive addresses: {bounced}." in only.json()[0]["Message"]
    answers = mixed.json()
    assert [a["ErrorCode"] for a in answers] == [406, 0, 0]
    assert "will not deliver to these inactive addresses: " + bounced in answers[1]["Message"]
    assert answers[2]["Message"] == "OK"
    assert sorted((e["rcpt"], e["event"]) for e in rx.events()) == [
        (bounced, "bounce"), (fresh, "delivered"), (fresh, "delivered")
    ]  # fmt: skip
