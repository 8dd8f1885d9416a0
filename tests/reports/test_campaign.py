"""The per-recipient campaign analysis on hand-written ledgers: every outcome, acceptances adding up
across ESPs, the two correlations, the fault windows, the load's fate leaving campaign mail out, the
campaign objectives and the campaign sizing."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailstorm.errors import UserError
from mailstorm.harness.campaign import lists
from mailstorm.ledger import CampaignAnswer, CampaignList, CampaignTrigger, LedgerWriter, SutBounced
from mailstorm.reports.campaign import OUTCOMES, analyze
from mailstorm.reports.fate import Fates
from mailstorm.reports.recovery import Window
from mailstorm.reports.sizing import campaign_sizing
from mailstorm.reports.slo import judge_campaign
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.store import open_run
from mailstorm.runinfo import EspLimits
from tests.records import accepted, submit
from tests.reports.oracle import classify, read_columns

NS = 1_000_000_000
T0 = 1_800_000_000 * NS
CID = "c1"
# a..f subscribed, u1/u2 unsubscribed
ROWS = [(f"{x}@x.test", x, "subscribed") for x in "abcdef"] + [
    ("u1@x.test", "u1", "unsubscribed"),
    ("u2@x.test", "u2", "unsubscribed"),
]


def write_run(run_dir: Path, esp: dict[str, list[tuple[int, str, str | None]]], bounced=()) -> Path:
    """A run directory: the list, the campaign's timeline records, ESP ledgers of (second, to, campaign)."""
    (run_dir / "campaign").mkdir(parents=True)
    lists.write(run_dir / "campaign" / f"{CID}.csv", ROWS)
    tl = LedgerWriter(run_dir / "ledger", "timeline")
    tl.write(CampaignList(id=CID, path="", url="", recipients=len(ROWS), unsubscribed=2), t=T0)
    tl.write(CampaignTrigger(id=CID, via="http", request="POST /campaigns", at_s=1.0), t=T0 + NS)
    tl.write(CampaignAnswer(id=CID, via="http", ok=True, code=202, answer="ok", started=T0 + NS), t=T0 + NS)
    tl.close()
    for src, accs in esp.items():
        w = LedgerWriter(run_dir / "ledger", src)
        for sec, to, camp in accs:
            rec = accepted(None)
            w.write(type(rec)(**{**_fields(rec), "to": [to], "campaign": camp}), t=T0 + sec * NS)
        w.close()
    if bounced:
        w = LedgerWriter(run_dir / "ledger", "sut")
        for address in bounced:
            w.write(
                SutBounced(id=f"campaign:{CID}:{address}", code=550, text="no", rcpts=[address]),
                t=T0 + 5 * NS,
            )
        w.close()
    return run_dir


def campaigns(run: Path, *args) -> list:
    """The campaigns of a run directory, from its Store."""
    with open_run(run / "ledger") as store:
        return analyze(run, store, *args)


def _fields(rec) -> dict:
    return {f: getattr(rec, f) for f in rec.__struct_fields__}


def by_address(c) -> dict[str, str]:
    return {row[0]: OUTCOMES[k] for row, k in zip(ROWS, c.outcome, strict=True)}


def test_every_recipient_gets_one_outcome_and_they_add_up(tmp_path):
    run = write_run(
        tmp_path / "run",
        {
            "esp-smtp-0": [(2, "a@x.test", CID), (3, "b@x.test", CID), (4, "u1@x.test", CID),
                           (4, "stray@y.test", CID), (5, "c@x.test", "other"), (6, "d@x.test", None)],
            # a second ESP: b's acceptances add up (and the case of an address does not matter)
            "esp-smtp-1": [(7, "B@X.test", CID)],
        },
        bounced=["e@x.test"],
    )  # fmt: skip
    (c,) = campaigns(run, {}, T0, 10, [])
    assert by_address(c) == {
        "a@x.test": "delivered",
        "b@x.test": "duplicated",
        "c@x.test": "missing",  # another campaign's header: not this one's
        "d@x.test": "missing",  # no header: correlation header does not count it
        "e@x.test": "bounced",
        "f@x.test": "missing",
        "u1@x.test": "suppressed_sent",
        "u2@x.test": "suppressed",
    }
    f = c.as_dict()
    assert sum(f["outcomes"].values()) == f["recipients"] == 8 and f["unexpected"] == 1
    assert f["unheaded"] == 1  # d's acceptance, without the header
    missing = next(r for r in judge_campaign(SloSpec(), f) if r.name.startswith("max_campaign_missing"))
    assert "without the X-Mailstorm-Campaign header" in missing.detail
    t = f["times"]
    assert (t["first_delivery_s"], t["completion_s"]) == (1.0, 2.0)  # trigger at 1 s; a at 2 s, b at 3 s
    assert c.delivered_per_s[2] == 1 and c.delivered_per_s[3] == 1


def test_by_recipient_every_acceptance_for_a_listed_address_counts(tmp_path):
    run = write_run(
        tmp_path / "run", {"esp-smtp-0": [(2, "a@x.test", None), (3, "b@x.test", "x"), (4, "z@y.test", None)]}
    )
    (c,) = campaigns(run, {CID: "recipient"}, T0, 10, [])
    o = by_address(c)
    assert o["a@x.test"] == o["b@x.test"] == "delivered" and c.unexpected is None


def test_fault_windows_say_who_was_delayed_missing_or_sent_twice(tmp_path):
    run = write_run(
        tmp_path / "run",
        {"esp-smtp-0": [(2, "a@x.test", CID), (3, "b@x.test", CID), (6, "b@x.test", CID),
                        (9, "c@x.test", CID), (5, "d@x.test", CID)]},
    )  # fmt: skip
    (c,) = campaigns(run, {}, T0, 12, [Window("crash", 4.0, 7.0)])
    (w,) = c.windows
    # Owed at 4 s: c, d, e, f (a and b were delivered before). c came after the window (delayed), d inside
    # it; e and f never (missing). b's second copy at 6 s is the window's duplicate.
    assert (w["owed"], w["delayed"], w["missing"], w["duplicated"]) == (4, 1, 2, 1)


def test_campaign_mail_is_not_the_loads(tmp_path):
    """An acceptance with a campaign header is left out of the load's fate (incremental and batch alike):
    it is not an unmatched acceptance that would turn a lost load message into an uncorrelated one."""
    ledger = tmp_path / "ledger"
    w = LedgerWriter(ledger, "mixed")
    records = [submit("m1", intended=T0), accepted("m1"), submit("m2", intended=T0)]
    camp = accepted(None)
    records.append(type(camp)(**{**_fields(camp), "to": ["a@x.test"], "campaign": CID}))
    for r in records:
        w.write(r)
    w.close()
    live = Fates()
    live.feed_all(records)
    batch = classify(read_columns(ledger))
    assert live.esp_unmatched == batch.esp_unmatched == 0
    assert live.counts()["lost"] == batch.counts()["lost"] == 1


def test_the_campaign_objectives_are_judged_with_their_defaults(tmp_path):
    run = write_run(
        tmp_path / "run", {"esp-smtp-0": [(2, "a@x.test", CID), (3, "a@x.test", CID), (4, "u1@x.test", CID)]}
    )
    (c,) = campaigns(run, {}, T0, 10, [])
    results = {r.name: r for r in judge_campaign(SloSpec(max_campaign_duration_s=60), c.as_dict())}
    assert not results["max_campaign_missing[c1]"].passed and results["max_campaign_missing[c1]"].actual == 5
    assert not results["max_campaign_duplicated[c1]"].passed
    assert not results["max_suppressed_sent[c1]"].passed
    assert not results["max_campaign_duration_s[c1]"].passed  # subscribers missing: it never completed
    assert "campaign_started[c1]" not in results
    relaxed = SloSpec(max_campaign_missing=5, max_campaign_duplicated=1, max_suppressed_sent=1)
    assert all(r.passed for r in judge_campaign(relaxed, c.as_dict()))


def test_a_campaign_that_never_started_fails_its_started_objective(tmp_path):
    run = write_run(tmp_path / "run", {})
    w = LedgerWriter(run / "ledger", "timeline")
    # the later answer (by time: the Store orders the records it reads whole by their time)
    w.write(
        CampaignAnswer(id=CID, via="http", ok=False, code=503, answer="busy", started=T0 + NS), t=T0 + 2 * NS
    )
    w.close()
    (c,) = campaigns(run, {}, T0, 10, [])
    (started, *_) = judge_campaign(SloSpec(), c.as_dict())
    assert started.name == "campaign_started[c1]" and not started.passed and "503 busy" in started.detail


@pytest.mark.parametrize(("rate", "bound"), [(10.0, "the ESP's rate"), (1000.0, "the SUT")])
def test_campaign_sizing_against_the_measured_rate_and_the_quotas(rate, bound):
    campaign = {"id": CID, "recipients": 1000, "unsubscribed": 0, "times": {"rate_per_s": 100.0}}
    out = campaign_sizing(100_000, campaign, EspLimits(rate=rate, daily_quota=50_000))
    assert out["seconds_at_measured"] == 1000 and out["seconds_at_esp_rate"] == 100_000 / rate
    assert out["seconds"] == max(1000, 100_000 / rate) and out["days_of_quota"] == 2
    assert bound in out["arithmetic"][-2] and "2 days" in out["arithmetic"][-1]


def test_a_list_that_cannot_be_read_back_is_a_one_line_error(tmp_path):
    run = write_run(tmp_path / "run", {"esp-smtp-0": [(2, "a@x.test", CID)]})
    (run / "campaign" / f"{CID}.csv").write_text("email,name,status\na@x.test,a\n")  # a row short of a field
    with pytest.raises(UserError, match="the campaign's list cannot be read back") as err:
        campaigns(run, {}, T0, 10, [])
    assert "\n" not in str(err.value)
    (run / "campaign" / f"{CID}.csv").unlink()  # and no list at all (nor at the path its record names)
    with pytest.raises(UserError, match="the campaign's list cannot be read back"):
        campaigns(run, {}, T0, 10, [])


def test_an_answer_without_a_code_is_still_the_answer(tmp_path):
    """A trigger that got no answer at all (code null) is read as the campaign's answer, not dropped."""
    run = write_run(tmp_path / "run", {})
    w = LedgerWriter(run / "ledger", "timeline")
    w.write(CampaignAnswer(id=CID, via="http", ok=False, code=None, answer="timed out", started=T0 + NS),
            t=T0 + 2 * NS)  # fmt: skip
    w.close()
    (c,) = campaigns(run, {}, T0, 10, [])
    assert not c.started and c.trigger["answer"] == "timed out" and c.trigger["code"] is None
