"""A fault window inside which nothing was refused, delayed, cut or failed is reported "no effect" and fails
``max_recovery_s``; a fault whose records show it acting, or an outage the traffic felt, is not."""

from __future__ import annotations

from mailstorm.ledger import Kind, LedgerWriter
from mailstorm.reports import build
from mailstorm.reports.analysis import analyze
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.synthetic import T0_NS, synthesize
from tests.records import loose

_NS = 1_000_000_000


def window(tl: LedgerWriter, label: str, what: str, start: int, end: int, **params) -> None:
    loose(tl, Kind.CHAOS_BEGIN, t=T0_NS + start * _NS, name=label, what=what, params=params)
    loose(tl, Kind.CHAOS_END, t=T0_NS + end * _NS, name=label, what=what, params=params)


def at(second: float) -> int:
    return T0_NS + int(second * _NS)


def test_each_window_is_judged_by_who_can_see_its_fault_act(tmp_path):
    """Over a steady, healthy run: an ESP fault with no record of acting has no effect even with the SUT
    deferring in its window (someone else's failures); one whose records name it has; a toxic the proxy
    recorded acting has; an outage nobody felt has none; an outage with SUT deferrals in it has."""
    synthesize(tmp_path, rates=[50.0] * 70, slo=SloSpec(max_recovery_s=10))
    with LedgerWriter(tmp_path / "ledger", "timeline") as tl:
        window(tl, "idle-fault", "esp_fault", 5, 10, type="reply", phase="mail")
        window(tl, "busy-fault", "esp_fault", 15, 20, type="latency", phase="eod", name="slow-eod")
        window(tl, "toxic", "network", 25, 30, type="latency", ms=50)
        window(tl, "quiet-outage", "esp_outage", 35, 40, mode="refuse", on=["http"])
        window(tl, "felt-outage", "esp_outage", 45, 50, mode="refuse")
        window(tl, "idle-toxic", "network", 55, 60, type="blackhole", name="nowhere")
    with LedgerWriter(tmp_path / "ledger", "esp-smtp-1") as esp:
        for s in (16, 17, 18):
            slow = {"fault": "slow-eod", "ftype": "latency", "phase": "eod", "action": "delay"}
            loose(esp, Kind.ESP_FAULT, t=at(s), **slow)
        # The listener going down is a state, not an action on traffic.
        loose(esp, Kind.ESP_FAULT, t=at(35.1), fault="quiet-outage", phase="listener", state="begin")
        loose(esp, Kind.ESP_FAULT, t=at(55.5), fault="other", ftype="latency", phase="eod", action="delay")
    with LedgerWriter(tmp_path / "ledger", "proxy") as proxy:
        loose(proxy, Kind.PROXY_ACTED, t=at(26), toxic="toxic", type="latency", path="http", action="delay")
    with LedgerWriter(tmp_path / "ledger", "sut-extra") as sut:
        for s in (6.1, 6.2, 7.3, 8.4):  # failures inside the idle ESP fault's window: not its doing
            loose(sut, Kind.SUT_DEFERRED, t=at(s), id=None, attempt=1, code=None)
        for s in (45.5, 45.7, 46.5, 46.6, 47.5, 47.8, 48.5, 48.9):
            loose(sut, Kind.SUT_DEFERRED, t=at(s), id=None, attempt=1, code=None)
    a = analyze(tmp_path)
    faults = {f["name"]: f for f in a.figures["faults"]}
    assert {n for n, f in faults.items() if f["no_effect"]} == {"idle-fault", "quiet-outage", "idle-toxic"}
    assert faults["busy-fault"]["effect"] == {
        "acted": 3,
        "failed": 0,
        "impacted": False,
        "decided_by": "actor",
        "moved": 0,
    }
    assert faults["toxic"]["effect"]["acted"] == 1
    assert (
        faults["felt-outage"]["effect"]["failed"] >= 5
        and faults["felt-outage"]["effect"]["decided_by"] == "client"
    )
    assert faults["idle-fault"]["effect"]["acted"] == 0
    slo = {s["name"]: s for s in a.figures["slo"]}["max_recovery_s"]
    assert not slo["passed"] and a.figures["verdict"] == "fail"
    assert "3 of 6 fault window(s) had no effect (idle-fault, quiet-outage, idle-toxic)" in slo["detail"]


def test_no_effect_is_named_in_every_report(tmp_path):
    """report.md, report.html and junit.xml name the window with no effect; report.json flags it."""
    synthesize(tmp_path, rates=[50.0] * 30, slo=SloSpec(max_recovery_s=10))
    with LedgerWriter(tmp_path / "ledger", "timeline") as tl:
        window(tl, "missed", "network", 10, 15, type="reset")
    verdict = build(tmp_path)
    assert not verdict.passed
    md = (tmp_path / "report.md").read_text()
    assert "| missed |" in md and "no effect" in md
    assert "no effect" in (tmp_path / "report.html").read_text()
    assert "missed" in (tmp_path / "junit.xml").read_text()
    assert verdict.figures["faults"][0]["no_effect"] is True


def test_a_felt_outage_passes_as_before(outage_run):
    """The 10 s outage of the synthetic run (its ESP refusing every held message) had an effect: the
    max_recovery_s verdict is the recovery time's alone."""
    run_dir, _ = outage_run
    a = analyze(run_dir)
    (f,) = a.figures["faults"]
    assert not f["no_effect"] and f["effect"]["failed"] > 0 and f["effect"]["impacted"]
    slo = {s["name"]: s for s in a.figures["slo"]}["max_recovery_s"]
    assert "no effect" not in slo["detail"]
