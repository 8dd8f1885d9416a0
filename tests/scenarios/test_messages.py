"""The message factory: realistic, seeded, sized as configured, each with a unique correlation id."""

from __future__ import annotations

import collections
import email
from email import policy

from mailstorm.correlation import body_token, id_from_body, id_from_recipients
from mailstorm.scenarios.messages import MessageFactory
from mailstorm.scenarios.model import LoadSpec

MIX = LoadSpec.model_validate(
    {
        "messages": [
            {"name": "text", "weight": 6, "size": "2KB"},
            {"name": "html", "weight": 3, "size": "30KB", "html": True, "recipients": [1, 5]},
            {"name": "attach", "weight": 1, "size": "500KB", "attachment": True},
        ]
    }
)


def test_ids_and_message_ids_are_unique_and_carried_in_headers():
    """Every message has X-Mailstorm-Id = <run_id>-<worker>-<seq> and a unique Message-ID, both in its
    headers, where the fake ESP reads them."""
    f = MessageFactory(MIX, run_id="20240101-000000-x", worker=3, seed=1)
    msgs = [f.next() for _ in range(300)]
    assert [m.id for m in msgs[:2]] == ["20240101-000000-x-3-1", "20240101-000000-x-3-2"]
    assert len({m.id for m in msgs}) == len({m.message_id for m in msgs}) == 300
    for m in msgs[:40]:
        parsed = email.message_from_bytes(m.raw, policy=policy.default)
        assert parsed["X-Mailstorm-Id"] == m.id
        assert parsed["Message-ID"] == m.message_id
        assert parsed["From"] and parsed["Date"] and parsed["Subject"] == m.subject
        assert sorted(a.addr_spec for a in parsed["To"].addresses) == sorted(m.recipients)


def test_sizes_mix_and_structure_follow_the_classes():
    """Each class's messages are within 10% of its size, the mix follows the weights, HTML messages are
    multipart/alternative and attachments multipart/mixed with a base64 part."""
    f = MessageFactory(MIX, run_id="r", worker=0, seed=2)
    msgs = [f.next() for _ in range(2000)]
    by_cls = collections.defaultdict(list)
    for m in msgs:
        by_cls[m.cls].append(m)
    for name, size in (("text", 2000), ("html", 30_000), ("attach", 500_000)):
        assert all(abs(len(m.raw) - size) <= size * 0.1 for m in by_cls[name]), name
    assert abs(len(by_cls["text"]) / 2000 - 0.6) < 0.05
    assert abs(len(by_cls["html"]) / 2000 - 0.3) < 0.05
    html = email.message_from_bytes(by_cls["html"][0].raw, policy=policy.default)
    assert html.get_content_type() == "multipart/alternative"
    assert {p.get_content_type() for p in html.iter_parts()} == {"text/plain", "text/html"}
    att = email.message_from_bytes(by_cls["attach"][0].raw, policy=policy.default)
    assert att.get_content_type() == "multipart/mixed"
    (part,) = list(att.iter_attachments())
    assert part["Content-Transfer-Encoding"] == "base64" and len(part.get_content()) > 300_000
    assert {len(m.recipients) for m in by_cls["html"]} == {1, 2, 3, 4, 5}
    assert {len(m.recipients) for m in by_cls["text"]} == {1}


def test_same_seed_same_messages_other_worker_other_messages():
    """The factory is deterministic for a (seed, worker); another worker gets other content and ids."""
    a = MessageFactory(MIX, run_id="r", worker=0, seed=5)
    b = MessageFactory(MIX, run_id="r", worker=0, seed=5)
    c = MessageFactory(MIX, run_id="r", worker=1, seed=5)
    for _ in range(20):
        ma, mb, mc = a.next(), b.next(), c.next()
        assert (ma.id, ma.sender, ma.recipients, ma.subject, ma.text) == (
            mb.id,
            mb.sender,
            mb.recipients,
            mb.subject,
            mb.text,
        )
        assert ma.id != mc.id
    assert [a.next().text for _ in range(10)] != [c.next().text for _ in range(10)]


def test_recipient_and_body_carriers_hold_each_message_id():
    """load.correlation: recipient plus-addresses every recipient with the id (unique per message);
    body puts the [mailstorm:ID] token on the first line of the text part (the text the HTTP templates
    get too); the header is written either way. What the ESP's readers take back out is the id."""
    for carrier in ("recipient", "body"):
        spec = MIX.model_copy(update={"correlation": carrier})
        f = MessageFactory(spec, run_id="20240101-000000-x", worker=1, seed=3)
        msgs = [f.next() for _ in range(200)]
        for m in msgs:
            parsed = email.message_from_bytes(m.raw, policy=policy.default)
            assert parsed["X-Mailstorm-Id"] == m.id
            text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain").get_content()
            if carrier == "recipient":
                assert all(r.split("@")[0].endswith(f"+{m.id}") for r in m.recipients)
                assert id_from_recipients(m.recipients) == m.id
                assert id_from_body(m.raw) is None
            else:
                assert text.startswith(body_token(m.id)) and m.text.startswith(body_token(m.id))
                assert id_from_body(m.raw) == m.id
                assert id_from_recipients(m.recipients) is None
        if carrier == "recipient":
            assert len({m.recipients for m in msgs}) == len(msgs)  # unique per message
