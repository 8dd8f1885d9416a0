"""Several ESPs in one run: per-ESP figures, failover and failback time, and duplicates across ESPs, from
hand-written ledgers whose answers are known."""

from __future__ import annotations

from mailstorm.ledger import ChaosBegin, ChaosEnd, LedgerReader, LedgerWriter
from mailstorm.reports.analysis import analyze
from mailstorm.reports.failover import failover
from mailstorm.reports.fate import Fates
from mailstorm.reports.store import esp_of_file, open_run
from tests.records import accepted, submit
from tests.reports.fate_forms import sql_counts

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _ledgers(tmp_path):
    """Ten messages a second for 10 s; the primary is down from 3 s to 6 s; the SUT moves to the
    secondary 0.5 s into the fault and back 0.25 s after its end; message m-35 both ESPs accepted."""
    ledger = tmp_path / "ledger"
    with (
        LedgerWriter(ledger, "load-0") as load,
        LedgerWriter(ledger, "esp-primary-smtp-0") as primary,
        LedgerWriter(ledger, "esp-secondary-smtp-0") as secondary,
        LedgerWriter(ledger, "timeline") as timeline,
    ):
        timeline.write(ChaosBegin(name="down", what="esp_outage", params={}, esp="primary"), t=T0 + 3 * NS)
        timeline.write(ChaosEnd(name="down", what="esp_outage", params={}, esp="primary"), t=T0 + 6 * NS)
        for i in range(100):
            t = T0 + i * NS // 10
            load.write(submit(f"m-{i}", intended=t, start=t, ok=True, code=250), t=t)
            at = t + NS // 100
            to = secondary if T0 + 35 * NS // 10 <= at < T0 + 625 * NS // 100 else primary
            to.write(accepted(f"m-{i}"), t=at)
        primary.write(accepted("m-35", acked=False), t=T0 + 31 * NS // 10)  # cut off, then sent again
    return ledger


def test_failover_and_failback_times_and_shares(tmp_path):
    with open_run(_ledgers(tmp_path)) as store:
        got = failover(store, T0, ["primary", "secondary"])
    assert got is not None
    assert got.esps == ["primary", "secondary"]
    assert got.accepted == {"primary": 73, "secondary": 28}
    (fault,) = got.faults
    assert (fault.name, fault.esp, fault.start_s, fault.end_s) == ("down", "primary", 3.0, 6.0)
    assert fault.via == "secondary"
    assert fault.failover_s == 0.51  # m-35 at the secondary, 3.51 s
    assert fault.failback_s == 0.31  # m-63 at the primary again, 6.31 s
    assert got.shares[0] == {"primary": 10, "secondary": 0}
    assert got.shares[4] == {"primary": 0, "secondary": 10}
    assert sum(sum(s.values()) for s in got.shares) == 101
    assert got.both == 1


def test_a_network_step_naming_an_esp_is_a_fault_of_that_esp(tmp_path):
    """A network window whose step named the primary (the proxy on its paths alone) gets its failover and
    failback times; one naming no ESP (every ESP's paths) is no ESP's fault."""
    ledger = _ledgers(tmp_path)
    with LedgerWriter(ledger, "timeline-2") as timeline:
        for name, esp in (("cut", "primary"), ("everywhere", None)):
            begin = ChaosBegin(name=name, what="network", params={}, esp=esp)
            timeline.write(begin, t=T0 + 3 * NS)
            timeline.write(ChaosEnd(name=name, what="network", params={}, esp=esp), t=T0 + 6 * NS)
    with open_run(ledger) as store:
        got = failover(store, T0, ["primary", "secondary"])
    assert got is not None
    faults = {f.name: f for f in got.faults}
    assert set(faults) == {"down", "cut"}
    assert (faults["cut"].esp, faults["cut"].via, faults["cut"].failover_s) == ("primary", "secondary", 0.51)


def test_a_duplicate_across_esps_is_duplicated_in_both_forms_of_fate(tmp_path):
    """The fate module takes acceptances from every ESP's ledger alike: m-35, accepted by each ESP once,
    is duplicated, in the batch form and in the incremental (live) form."""
    ledger = _ledgers(tmp_path)
    batch = sql_counts(ledger)
    live = Fates()
    live.feed_all(LedgerReader(ledger).records())
    assert batch["duplicated"] == 1 and batch["delivered"] == 99
    assert live.counts() == batch


def test_one_esp_has_no_failover_figures(tmp_path):
    ledger = tmp_path / "ledger"
    with LedgerWriter(ledger, "load-0") as load, LedgerWriter(ledger, "esp-smtp-0") as esp:
        load.write(submit("a", intended=T0, start=T0, ok=True, code=250))
        esp.write(accepted("a"))
    with open_run(ledger) as store:
        assert failover(store, T0) is None


def test_which_esp_a_ledger_file_is():
    assert esp_of_file("esp-smtp-0") == "esp"
    assert esp_of_file("esp-secondary-smtp-3") == "secondary"
    assert esp_of_file("sut") is None and esp_of_file("load-0") is None


def test_mail_moved_to_another_esp_is_the_fault_s_effect(tmp_path):
    """A SUT that fails over within one delivery shows no failure at all: the mail the other ESP took
    during the window is the evidence that the fault touched the traffic (no false "no effect")."""
    _ledgers(tmp_path)
    (fault,) = analyze(tmp_path).figures["faults"]
    assert not fault["no_effect"]
    assert fault["effect"]["failed"] == 0 and fault["effect"]["moved"] > 20
