"""The analytics section: the SUT's event counts against the webhook events the ESP posted, per kind and
per fault window, from sut.event records (exact, event by event) or from an analytics probe (counts), and
the max_analytics_error objective, which never passes when it cannot be judged."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import mailstorm.reports
from mailstorm.ledger import AnalyticsProbe, EspWebhook, LedgerWriter, SutEvent
from mailstorm.reports import analytics
from mailstorm.reports.analytics import judge_analytics
from mailstorm.reports.recovery import Window
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import open_run
from mailstorm.reports.synthetic import T0_NS, synthesize

NS = 1_000_000_000
SCHEMA = Path(mailstorm.reports.__file__).parent / "schema" / "report.schema.json"


def hook(eid: str, event: str, *, attempt: int = 1, ok: bool = True, fault: str | None = None) -> EspWebhook:
    status = None if attempt == 0 else (200 if ok else 503)
    return EspWebhook(
        api="mailgun", event=event, id=None, esp_id="e", rcpt="a@x.test", event_id=eid, url="http://x/",
        status=status, attempt=attempt, fault=fault, copy=0, final=ok, ok=ok, error=None,
    )  # fmt: skip


def analyze(ledger: Path, *args):
    """The analytics section of a ledger directory, from its Store."""
    with open_run(ledger) as store:
        return analytics.analyze(store, *args)


def write(ledger: Path, src: str, records: list[tuple[float, object]]) -> None:
    w = LedgerWriter(ledger, src)
    for sec, rec in records:
        w.write(rec, t=T0_NS + int(sec * NS))
    w.close()


ESP = [
    # e1 open: posted at 1 s, refused, retried at 5 s and acknowledged
    (1.0, hook("e1", "open", ok=False)), (5.0, hook("e1", "open", attempt=2)),
    (1.5, hook("e2", "open")), (2.0, hook("e3", "click")), (6.0, hook("e4", "click")),
    (7.0, hook("e5", "delivered")), (3.0, hook("e6", "open", attempt=0, fault="drop")),
]  # fmt: skip


def test_sut_event_records_give_missed_and_double_counted_event_by_event(tmp_path):
    """With sut.event records the figures are exact: a missed event and a double count do not cancel out."""
    write(tmp_path, "esp-smtp-0", ESP)
    # e1 counted twice (first try and retry), e3 never, e9 the ESP never posted
    counts = [(1.0, "open", "e1"), (5.0, "open", "e1"), (1.5, "open", "e2"), (6.0, "click", "e4"),
              (7.0, "delivered", "e5"), (7.5, "click", "e9")]  # fmt: skip
    sut = [(sec, SutEvent(event=kind, event_id=eid)) for sec, kind, eid in counts]
    write(tmp_path, "sut", sut)
    a = analyze(tmp_path, T0_NS, [Window("kill", 0.5, 3.0)], 10)
    assert a.source == "events" and a.exact
    assert a.kinds["open"] == {"sent": 2, "acknowledged": 2, "not_posted": 1, "counted": 3, "missed": 0,
                               "double_counted": 1, "error": 1, "error_ratio": 0.5}  # fmt: skip
    assert a.kinds["click"] == {"sent": 2, "acknowledged": 2, "not_posted": 0, "counted": 2, "missed": 1,
                                     "double_counted": 1, "error": 2, "error_ratio": 1.0}  # fmt: skip
    assert (a.total["sent"], a.total["missed"], a.total["double_counted"]) == (5, 1, 2)
    (w,) = a.windows
    # Inside 0.5-3 s: e1, e2, e3 first posted; after (3 s on): e4, e5.
    assert (w["inside"]["sent"], w["inside"]["missed"], w["inside"]["double_counted"]) == (3, 1, 1)
    assert (w["after"]["sent"], w["after"]["missed"], w["after"]["double_counted"]) == (2, 0, 0)
    assert a.series["sent"][:8] == [0, 2, 3, 3, 3, 3, 4, 5]
    assert a.series["acknowledged"][:8] == [0, 1, 2, 2, 2, 3, 4, 5]


def test_a_probe_gives_counts_and_the_gap_while_it_did_not_answer(tmp_path):
    """The last answered poll (the final one first) is the SUT's count; unanswered seconds show the gap."""
    write(tmp_path, "esp-smtp-0", ESP)
    polls = [
        (1.9, AnalyticsProbe(url="http://sut/analytics", status=200, ok=True, counts={"open": 1.0})),
        (2.5, AnalyticsProbe(url="http://sut/analytics", status=None, ok=False, error="refused")),
        (3.5, AnalyticsProbe(url="http://sut/analytics", status=None, ok=False, error="refused")),
        (7.5, AnalyticsProbe(url="http://sut/analytics", status=200, ok=True,
                             counts={"open": 2.0, "click": 2.0, "delivered": 1.0}, final=True)),
        (8.0, AnalyticsProbe(url="http://sut/analytics", status=200, ok=True, counts={"open": 0.0})),
    ]  # fmt: skip
    write(tmp_path, "timeline", polls)
    a = analyze(tmp_path, T0_NS, [Window("kill", 2.0, 4.0)], 10)
    assert a.source == "probe" and not a.exact
    assert a.total["error"] == 0 and a.total["counted"] == 5
    (w,) = a.windows
    assert w["blind_s"] == 2 and w["inside"]["missed"] is None
    assert a.series["counted"][1] == 1 and a.series["counted"][2] is None
    assert a.probe == {
        "url": "http://sut/analytics",
        "polls": 5,
        "failed": 2,
        "final": True,
        "last_error": "refused",
    }
    assert judge_analytics(SloSpec(max_analytics_error=0), a)[0].passed


@pytest.mark.parametrize(
    ("limit", "passed"),
    [(0, False), (1, False), (2, True), ("50%", False), ("100%", True), ("2, 60%", False)],
)
def test_max_analytics_error_takes_a_count_a_share_or_both(tmp_path, limit, passed):
    """Every event kind's error is held to the limit: a count, a share of its sent events, or both."""
    write(tmp_path, "esp-smtp-0", ESP)
    write(tmp_path, "sut", [(1.0, SutEvent(event="open", event_id="e1")),
                            (1.5, SutEvent(event="open", event_id="e2")),
                            (7.0, SutEvent(event="delivered", event_id="e5"))])  # fmt: skip
    a = analyze(tmp_path, T0_NS, [], 10)  # clicks: 2 of 2 missed
    (r,) = judge_analytics(SloSpec(max_analytics_error=limit), a)
    assert r.passed is passed and r.actual == 2


def test_no_probe_or_no_webhooks_cannot_be_judged_and_never_passes(tmp_path):
    """An objective on analytics that nothing measured fails and says what was missing."""
    (tmp_path / "a").mkdir()
    write(tmp_path / "a", "esp-smtp-0", ESP)
    a = analyze(tmp_path / "a", T0_NS, [], 10)
    (r,) = judge_analytics(SloSpec(max_analytics_error=0), a)
    assert not r.passed and "cannot be judged" in r.detail and "no analytics probe" in r.detail
    (tmp_path / "b").mkdir()
    write(tmp_path / "b", "timeline", [(1.0, AnalyticsProbe(url="u", status=200, ok=True, counts={}))])
    (r,) = judge_analytics(SloSpec(max_analytics_error=0), analyze(tmp_path / "b", T0_NS, [], 10))
    assert not r.passed and "posted no webhook event" in r.detail
    (r,) = judge_analytics(SloSpec(max_analytics_error=0), None)
    assert not r.passed and "cannot be judged" in r.detail
    assert judge_analytics(SloSpec(), None) == []


def test_the_section_in_every_report(tmp_path):
    """report.json (valid against its schema), report.md, report.html and junit.xml carry the section."""
    synthesize(tmp_path, rates=(20.0,) * 10, slo=SloSpec(max_analytics_error=0))
    write(tmp_path / "ledger", "esp-smtp-9", ESP)
    write(tmp_path / "ledger", "sut-events", [(1.0, SutEvent(event="open", event_id="e1"))])
    mailstorm.reports.build(tmp_path)
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()), cls=jsonschema.Draft202012Validator)
    assert doc["analytics"]["kinds"]["total"]["missed"] == 4
    md = (tmp_path / "report.md").read_text()
    assert "| open | 2 | 2 | 1 | 1 | 1 | 0 | 1 (50.00%) |" in md
    assert 'id="analytics"' in (tmp_path / "report.html").read_text()
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="max_analytics_error"' in junit and "analytics error over the limit" in junit
