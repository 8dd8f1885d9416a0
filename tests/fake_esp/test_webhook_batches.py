"""Any number of events per POST, of any mix of kinds, for every webhook format: ``split`` cuts them into
the POSTs the ESP sends (batching ESPs several per POST up to their ``batch_max``, the others one), each
renders to a body a receiver decodes as the ESP's content type says (JSON, or a form) and reads back as
the events it carries, kind for kind, and the real poster posts them all to a real receiver, each
exactly once."""

from __future__ import annotations

import asyncio
import tempfile
from urllib.parse import parse_qs

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.profiles import load_profile
from mailstorm.fake_esp.webhooks import EVENTS, WEBHOOK_FORMATS, Event, read_events
from mailstorm.fake_esp.webhooks.formats import SUPPRESSED_FOR, per_post, render, split
from mailstorm.fake_esp.webhooks.poster import WebhookPoster
from mailstorm.fake_esp.webhooks.spec import EventMix, WebhookSpec
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader, LedgerWriter
from tests.fake_esp.http_support import Receiver

FORMATS = sorted(WEBHOOK_FORMATS.names())


def batch_max(fmt: str) -> int:
    policy = load_profile(fmt).webhook
    assert policy is not None
    return policy.batch_max


def events(n: int, kinds: list[str] | None = None) -> list[Event]:
    kinds = kinds or ["delivered"]
    return [
        Event(kinds[i % len(kinds)], f"ev-{i}", f"c-{i}", f"{1000 + i}", f"u{i}@example.test",
              "a@example.test", 1.7e9 + i, CORRELATION_HEADER, detail=SUPPRESSED_FOR[i % 3])
        for i in range(n)
    ]  # fmt: skip


def decode(body: bytes, headers: dict[str, str]) -> object:
    """What a receiver makes of a body by its content type: JSON (SES's SNS says text/plain and sends
    JSON), or a form (every field a string)."""
    if headers["Content-Type"].startswith("application/x-www-form-urlencoded"):
        form = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
        return form
    return orjson.loads(body)


@settings(max_examples=60, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    n=st.integers(0, 300),
    batch=st.integers(1, 300),
    mix=st.lists(st.sampled_from(EVENTS), min_size=1, max_size=9),
)
def test_any_count_of_any_kinds_splits_into_posts_that_render_and_read_back(fmt, n, batch, mix):
    kinds = [k for k in mix if k in WEBHOOK_FORMATS.get(fmt).kinds] or ["delivered"]
    evs = events(n, kinds)
    posts = split(fmt, evs, batch)
    assert [e for p in posts for e in p] == evs
    assert all(1 <= len(p) <= per_post(fmt, batch) for p in posts)
    for p in posts:
        body, headers = render(fmt, p)
        assert decode(body, headers)
        got = read_events(fmt, body, CORRELATION_HEADER)
        assert [(g["event"], g["id"], g["rcpt"]) for g in got] == [(e.event, e.id, e.rcpt) for e in p]


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_event_the_esp_has_reads_back_as_its_kind(fmt):
    """Each canonical event the ESP has an event for renders in its shape and reads back as that kind;
    the ESPs without one say so (``kinds``)."""
    kinds = WEBHOOK_FORMATS.get(fmt).kinds
    for i, kind in enumerate(sorted(kinds)):
        (e,) = events(1, [kind])
        body, _ = render(fmt, [e])
        (got,) = read_events(fmt, body, CORRELATION_HEADER)
        assert (got["event"], got["id"], got["esp_id"]) == (kind, "c-0", "1000"), (fmt, kind, i)
    missing = {"mailersend": {"deferred", "dropped"}, "postal": {"complaint", "unsubscribe"},
               "resend": {"unsubscribe"}}  # fmt: skip
    assert set(EVENTS) - kinds == missing.get(fmt, set())


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_redelivery_is_the_same_post(fmt):
    """A redelivered event (the duplicate fault, a retry) renders to the same body: the same event id,
    and for Mailgun the same signature token; two events differ in theirs (in the formats whose events
    carry an id: Mandrill's and Postmark's delivery events have none)."""
    for kind in sorted(WEBHOOK_FORMATS.get(fmt).kinds):
        a, b = (Event(kind, f"ev-{kind}-{i}", "c-1", "1001", "u@example.test", "a@example.test", 1.7e9,
                      CORRELATION_HEADER) for i in range(2))  # fmt: skip
        body, _ = render(fmt, [a])
        # The body is the same; headers may not be: Svix (Resend) signs each attempt with its own time.
        assert body == render(fmt, [a])[0]
        (got,) = read_events(fmt, body, CORRELATION_HEADER)
        if got["event_id"] is not None:
            assert got["event_id"] == a.event_id
            assert body != render(fmt, [b])[0]


async def _post_all(url: str, fmt: str, n: int, ledger_dir: str, mix: EventMix | None = None) -> None:
    writer = LedgerWriter(ledger_dir, "esp")
    poster = WebhookPoster(WebhookSpec(url=url, format=fmt, seed=1, events=mix or EventMix()), writer)
    await poster.start()
    try:
        rcpts = [f"u{i}@example.test" for i in range(n)]
        poster.notify(
            {"api": fmt, "id": "batch-1", "esp_id": "4242", "sender": "a@example.test", "to": rcpts}
        )
        await poster.stop(drain_s=20)
    finally:
        writer.close()


@settings(max_examples=25, deadline=None)
@given(fmt=st.sampled_from(FORMATS), n=st.integers(0, 250))
def test_the_poster_posts_any_number_of_events_at_once(fmt, n):
    """n events queued at once (one message to n recipients): all n reach the receiver, each once, in
    POSTs of at most what the ESP carries per POST; the ledger has one ok record per event."""
    with Receiver() as rx, tempfile.TemporaryDirectory() as d:
        asyncio.run(_post_all(rx.url, fmt, n, d))
        got = rx.events()
        posts = list(rx.posts)
        recs = list(LedgerReader(d).records([Kind.ESP_WEBHOOK]))
    assert sorted(e["rcpt"] for e in got) == sorted(f"u{i}@example.test" for i in range(n))
    assert {e["format"] for e in got} <= {fmt}
    limit = per_post(fmt, batch_max(fmt))
    assert all(1 <= len(read_events(fmt, body, CORRELATION_HEADER)) <= limit for _, body in posts)
    if n > limit:
        assert len(posts) >= -(-n // limit)
    assert len(recs) == n and all(r["ok"] and r["attempt"] == 1 for r in recs)


RATE = st.floats(0, 1)


@settings(max_examples=25, deadline=None)
@given(
    fmt=st.sampled_from(FORMATS),
    n=st.integers(0, 120),
    mix=st.builds(EventMix, bounce=RATE, soft_bounce=RATE, deferred=RATE, open=RATE, click=RATE,
                  complaint=RATE, unsubscribe=RATE),
)  # fmt: skip
def test_the_poster_posts_any_mix_of_kinds(fmt, n, mix):
    """Any events rates, one message to n recipients: every event the ESP has an event for reaches the
    receiver once, in the POSTs the ESP batches, as its kind; the esp.outcome records (one per
    recipient) say which events each recipient had and which the ESP has no event for (not posted)."""
    with Receiver() as rx, tempfile.TemporaryDirectory() as d:
        asyncio.run(_post_all(rx.url, fmt, n, d, mix))
        got = rx.events()
        recs = list(LedgerReader(d).records([Kind.ESP_WEBHOOK]))
        outcomes = list(LedgerReader(d).records([Kind.ESP_OUTCOME]))
    assert len(outcomes) == n
    posted = sorted((o["rcpt"], e) for o in outcomes for e in o["events"] if e not in o.get("unposted", []))
    assert all(
        set(o.get("unposted", [])) == set(o["events"]) - WEBHOOK_FORMATS.get(fmt).kinds for o in outcomes
    )
    assert sorted((e["rcpt"], e["event"]) for e in got) == posted
    assert len(recs) == len(posted) and all(r["ok"] and r["attempt"] == 1 for r in recs)
