"""The reference pipeline receives the fake ESP's webhooks (both real processes): every event counted once
by its event id (a duplicated post is not counted again, nor a post replayed after a SIGKILL and a
restart), a post with a bad signature refused and not counted, the counts at GET /analytics and on
/metrics, and one sut.event record per counted event."""

from __future__ import annotations

import json
import smtplib
import time
import urllib.error
import urllib.request
from collections import Counter
from email.message import EmailMessage

import pytest
import yaml

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.webhooks.formats import WEBHOOK_FORMATS, Event, render, sign
from mailstorm.fake_esp.webhooks.signing import Signer, load_or_make
from mailstorm.harness.reference.config import WEBHOOK_KEY_ENV
from mailstorm.harness.reference.signatures import verify
from mailstorm.harness.targets.base import TargetContext, WebhookReceiving
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port

KEY = "key-analytics-test"
HOST = "127.0.0.1"


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def wait_until(fn, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (got := fn()) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the ledgers and the receiver's counts
    assert got, "timed out"
    return got


def send(port: int, n: int) -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as s:
        for i in range(n):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "a@x.test", f"r{i}@x.test", "hi"
            msg["X-Mailstorm-Id"] = f"wh-{i}"
            msg.set_content("hello")
            s.send_message(msg)


def esp_events(ledger) -> dict[str, str]:
    """event id -> kind of every event the ESP posted, and whether every one is final."""
    return {
        r["event_id"]: r["event"] for r in LedgerReader(ledger).records([Kind.ESP_WEBHOOK]) if r["attempt"]
    }


def test_the_reference_counts_each_event_once_across_duplicates_and_a_crash(tmp_path):
    """Mailgun webhooks, half of them posted twice (the duplicate fault): the counts equal the distinct
    events posted, also after a SIGKILL and a restart; a forged post is refused."""
    target = ReferenceTarget(ReferenceTargetSpec())
    assert isinstance(target, WebhookReceiving)
    url = target.webhook_url("mailgun")
    hooks = tmp_path / "webhooks.yaml"
    spec = {"url": url, "signing_key": KEY, "seed": 3, "events": {"open": 0.6, "click": 0.5},
            "faults": {"duplicate": 0.5}}  # fmt: skip
    hooks.write_text(yaml.safe_dump(spec))
    ledger = tmp_path / "run" / "ledger"
    esp = EspProcess(
        ledger, profile="mailgun", extra_args=["--webhooks", str(hooks)], log_path=tmp_path / "esp.log"
    )
    esp.start()
    try:
        smtp = (HOST, esp.smtp_port)
        ctx = TargetContext(tmp_path / "run", ledger, seed=1, esp_smtp=smtp, env={WEBHOOK_KEY_ENV: KEY})
        (ep,) = target.start(ctx)
        send(ep.port, 20)
        analytics = target.analytics_urls[0]

        def settled() -> dict[str, int] | None:
            truth = Counter(esp_events(ledger).values())
            counts = json.loads(get(analytics)[1])
            return counts if truth["delivered"] == 20 and counts == dict(truth) else None

        counts = wait_until(settled)
        assert counts["delivered"] == 20 and counts.get("open", 0) > 0
        copies = [r for r in LedgerReader(ledger).records([Kind.ESP_WEBHOOK]) if r["copy"]]
        assert copies and all(r["ok"] for r in copies)  # answered 200, not counted again
        # A forged post (the signature made with another key) is refused and counts nothing.
        data = {"id": "forged", "event": "opened", "recipient": "x@x.test",
                "message": {"headers": {"message-id": "m@x"}}}  # fmt: skip
        sig = {"timestamp": "1", "token": "t", "signature": "0" * 64}
        body = json.dumps({"signature": sig, "event-data": data}).encode()
        assert not verify("mailgun", body, {}, KEY)
        assert post(url, body) == 401
        assert post(url.replace("/mailgun", "/nosuch"), b"{}") == 404
        # A crash and a restart: the counts come back from the store, and a replayed post is not counted.
        target.act("kill")
        target.act("start")
        assert json.loads(get(analytics)[1]) == counts or wait_until(settled)
        counts = json.loads(get(analytics)[1])
        metrics = get(target.metrics_urls[0])[1].decode()
        assert f'mailstorm_sut_webhook_events_total{{event="delivered"}} {counts["delivered"]:.1f}' in metrics
    finally:
        target.stop()
        esp.stop()
    sut = [r for r in LedgerReader(ledger).records([Kind.SUT_EVENT])]
    assert Counter(r["event"] for r in sut) == Counter(counts)
    assert len({r["event_id"] for r in sut}) == len(sut) and all(r["api"] == "mailgun" for r in sut)
    assert {r["event_id"] for r in sut} == set(esp_events(ledger))
    assert free_port()  # the ports were given back


@pytest.mark.parametrize("fmt", sorted(WEBHOOK_FORMATS.names()))
def test_a_signed_post_verifies_with_its_key_only(fmt):
    """Each format's post, as the fake ESP renders it, passes the receiver's check with the signing key
    and fails it with another (formats that sign nothing have nothing to fail)."""
    ev = Event(event="open", event_id="e1", id="c1", esp_id="m1", rcpt="r@x.test", sender="s@x.test",
               ts=1_800_000_000.0, header="X-Mailstorm-Id")  # fmt: skip
    body, headers = render(fmt, [ev], signing_key=KEY)
    if fmt in ("mandrill", "sendgrid"):  # signed with what the renderer cannot see: the URL, the run's key
        return
    assert verify(fmt, body, headers, KEY)
    signed = fmt in ("mailgun", "mailersend", "resend")
    assert verify(fmt, body, headers, "another-key") is not signed


@pytest.mark.parametrize("fmt", ["mandrill", "sendgrid"])
def test_posts_signed_with_the_url_or_the_runs_key_verify(fmt, tmp_path):
    """Mandrill (HMAC-SHA1 of the URL + sorted fields) and SendGrid (ECDSA with the run's key pair), signed
    by the fake ESP's own signer: the receiver's check passes with the key a run gives it (SendGrid: the
    verification key, as run.json publishes it) at the URL the ESP was told, and fails with another key,
    another URL, a changed body."""
    ev = Event(event="click", event_id="e2", id="c2", esp_id="m2", rcpt="r@x.test", sender="s@x.test",
               ts=1_800_000_000.0, header="X-Mailstorm-Id")  # fmt: skip
    keys = load_or_make(tmp_path / "keys.json")
    url = "http://127.0.0.1:8025/webhooks/" + fmt
    body, headers = sign(fmt, *render(fmt, [ev], signing_key=KEY), Signer(url, KEY, keys, ""))
    key = keys.sendgrid_public if fmt == "sendgrid" else KEY
    assert verify(fmt, body, headers, key, url)
    other = load_or_make(tmp_path / "other.json").sendgrid_public if fmt == "sendgrid" else "another-key"
    assert not verify(fmt, body, headers, other, url)
    assert not verify(fmt, body.replace(b"c2", b"c3"), headers, key, url)
    if fmt == "mandrill":
        assert not verify(fmt, body, headers, key, url + "x")
