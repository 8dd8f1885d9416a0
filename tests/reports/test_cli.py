"""The report, compare and sizing commands, through the real ``mailstorm`` dispatcher."""

from __future__ import annotations

import json

import pytest

from mailstorm.cli import main
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.ledger import LedgerWriter, RunStarted
from mailstorm.reports.spec import SloSpec
from mailstorm.reports.synthetic import synthesize


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A clean steady run (nothing lost) whose SLOs hold."""
    run_dir = tmp_path_factory.mktemp("clean")
    synthesize(run_dir, rates=[200.0] * 20, capacity=1000.0, slo=SloSpec(p99_e2e_ms=1000))
    info = json.loads((run_dir / "run.json").read_text())
    info["esp_limits"] = {"rate": 14, "daily_quota": 50_000}
    (run_dir / "run.json").write_text(json.dumps(info))
    return run_dir


def test_report_exit_codes(clean_run, outage_run, capsys):
    """`mailstorm report` rebuilds the reports and exits 0 when the SLOs held, 1 when one was breached."""
    assert main(["report", str(clean_run)]) == 0
    assert (clean_run / "report.html").exists() and (clean_run / "junit.xml").exists()
    assert "PASS" in capsys.readouterr().out
    assert main(["report", str(outage_run[0]), "--format", "json,md"]) == 1
    assert "breached: max_lost" in capsys.readouterr().out


def test_report_bad_input_is_one_line(tmp_path, capsys):
    """A directory that is not a run, a bad slo.json or a bad --format: one line, exit 2."""
    assert main(["report", str(tmp_path / "missing")]) == 2
    (tmp_path / "ledger").mkdir()
    (tmp_path / "slo.json").write_text('{"max_lost": -1}')
    assert main(["report", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path), "--format", "pdf"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "no such run directory" in err[0] and "max_lost" in err[1] and "pdf" in err[2]


def test_compare(clean_run, outage_run, capsys):
    """`mailstorm compare A B` prints the change in the headline figures."""
    assert main(["compare", str(clean_run), str(outage_run[0]), "--json"]) == 0
    rows = {r["figure"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
    assert rows["lost"]["a"] == 0 and rows["lost"]["b"] == 3 and rows["lost"]["better"] is False
    assert rows["submitted"]["delta"] == 6000 - 4000
    assert rows["verdict"]["a"] == "pass" and rows["verdict"]["b"] == "fail"
    assert main(["compare", str(clean_run), str(outage_run[0])]) == 0
    assert "e2e p95" in capsys.readouterr().out


def test_sizing_with_profile_limits_and_override(clean_run, capsys):
    """`mailstorm sizing` prints instances and ESP rate with the arithmetic; --esp-rate overrides limits."""
    assert main(["sizing", str(clean_run), "--target", "1000000/1h", "--headroom", "30%", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["required_rate"] == pytest.approx(1_000_000 / 3600 * 1.3, rel=1e-4)
    assert s["per_instance_rate"] == pytest.approx(200, rel=0.02)
    assert s["instances"] == 2  # ceil(361.1 / ~200)
    assert (s["esp_rate_limit"], s["esp_ok"]) == (14.0, False)
    assert (s["daily_quota"], s["daily_ok"]) == (50_000, False)
    assert (
        main(["sizing", str(clean_run), "--target", "50000/1h", "--headroom", "0", "--esp-rate", "20"]) == 0
    )
    out = capsys.readouterr().out
    assert "instances = ceil(13.89 / " in out and "ESP limit 20.00 msg/s vs 13.89 msg/s needed: enough" in out
    assert main(["sizing", str(clean_run), "--target", "1000/1h", "--esp-profile", "ses", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    ses = load_profile("ses").limits
    assert (s["esp_rate_limit"], s["daily_quota"]) == (ses.rate, ses.daily_quota)
    assert s["esp_limit_source"].startswith("ESP profile ses")


def test_sizing_bad_target_is_one_line(clean_run, capsys):
    """A malformed target or headroom names the flag, one line, exit 2."""
    assert main(["sizing", str(clean_run), "--target", "lots"]) == 2
    assert main(["sizing", str(clean_run), "--target", "10/1h", "--headroom", "much"]) == 2
    assert main(["sizing", str(clean_run), "--target", "10/1h", "--esp-profile", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[0].startswith("mailstorm: --target:") and "--headroom" in err[1]
    assert "nope" in err[2]


def test_a_run_that_sent_nothing_fails(tmp_path, capsys):
    """A run directory whose ledgers hold no submission fails: nothing was tested."""
    with LedgerWriter(tmp_path / "ledger", "timeline") as tl:
        tl.write(RunStarted(run_id="r", name="empty", seed=0, duration_s=1))
    assert main(["report", str(tmp_path)]) == 1
    assert "breached: submitted" in capsys.readouterr().out


def test_sizing_warns_when_the_esp_limited_the_run(outage_run, capsys):
    """Sizing from a run whose ESP refused attempts with 4xx says the rate may be the ESP's, not the SUT's."""
    assert main(["sizing", str(outage_run[0]), "--target", "100000/1h", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert any(a.startswith("the ESP refused 1,000 attempts with 4xx") for a in s["assumptions"])
    assert s["per_instance_source"].startswith("throughput delivered during the load")


def test_sizing_compare_profiles_weighs_the_target_against_every_profile(clean_run, capsys):
    """`--compare-profiles`: one row per ESP profile, whether its published rate and daily quota carry the
    target and how long the target takes on it; an unpublished limit decides nothing."""
    from mailstorm.fake_esp.profiles import PROFILE_NAMES

    assert main(["sizing", str(clean_run), "--target", "1000000/1d", "--headroom", "0", "--compare-profiles",
                 "--json"]) == 0  # fmt: skip
    s = json.loads(capsys.readouterr().out)
    rows = {r["profile"]: r for r in s["compare"]}
    assert set(rows) == set(PROFILE_NAMES)
    need = 1_000_000 / 86_400  # 11.57 msg/s
    assert s["required_rate"] == pytest.approx(need, rel=1e-3)
    brevo, hubspot, ses, sendgrid = rows["brevo"], rows["hubspot"], rows["ses"], rows["sendgrid"]
    assert (brevo["rate_ok"], brevo["carries"]) == (True, True) and brevo["send_s"] == pytest.approx(1000.0)
    # HubSpot: 19/s carries the rate, but 650,000 a day does not: one full day, then 350,000 at 19/s.
    assert (hubspot["rate_ok"], hubspot["daily_ok"], hubspot["carries"]) == (True, False, False)
    assert hubspot["send_s"] == pytest.approx(86_400 + 350_000 / 19, rel=1e-3)
    assert (ses["rate_ok"], ses["daily_ok"]) == (False, False)
    assert (sendgrid["rate"], sendgrid["carries"], sendgrid["send_s"]) == (None, None, None)
    assert rows["kit"]["api"] is None and rows["klaviyo"]["api"] == "klaviyo"
    order = [r["carries"] for r in s["compare"]]
    assert order == sorted(order, key=lambda c: {True: 0, None: 1, False: 2}[c])  # carriers first
    assert main(["sizing", str(clean_run), "--target", "1000000/1d", "--compare-profiles"]) == 0
    out = capsys.readouterr().out
    assert "every ESP profile for 1,000,000 messages" in out and "constantcontact" in out and "29.1 h" in out


def test_sizing_weighs_every_esp_of_a_run_with_several(clean_run, tmp_path, capsys):
    """A run with two ESPs (run.json esps_limits): the verdict stays the primary's, each ESP is weighed
    alone against the whole target (a failover leaves one with all of it), and their rates are summed;
    the JSON report validates, and the Markdown report names both."""
    import shutil

    run_dir = tmp_path / "two"
    shutil.copytree(clean_run, run_dir)
    info = json.loads((run_dir / "run.json").read_text())
    info["esps_limits"] = {"primary": {"rate": 14, "daily_quota": 50_000}, "secondary": {"rate": 100}}
    (run_dir / "run.json").write_text(json.dumps(info))
    assert main(["sizing", str(run_dir), "--target", "180000/1h", "--headroom", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["esp_rate_limit"], s["esp_ok"]) == (14.0, False)  # the primary's, as with one ESP
    assert s["esps"] == [
        {"name": "primary", "rate": 14.0, "ok": False, "daily_quota": 50_000, "daily_ok": False},
        {"name": "secondary", "rate": 100.0, "ok": True, "daily_quota": None, "daily_ok": None},
    ]
    assert s["esps_rate_sum"] == 114.0
    assert "all 2 ESPs together = 14.00 + 100.00 = 114.00 msg/s: enough" in s["arithmetic"]
    assert "ESP secondary: 100.00 msg/s vs 50.00 msg/s needed alone: enough" in s["arithmetic"]
    info["report"] = {"sizing": {"target": "180000/1h", "headroom": 0}, "formats": ["json", "md"]}
    (run_dir / "run.json").write_text(json.dumps(info))
    main(["report", str(run_dir), "--format", "json,md"])
    capsys.readouterr()
    md = (run_dir / "report.md").read_text()
    assert "Each ESP alone" in md and "secondary 100" in md and "together 114" in md
    report = json.loads((run_dir / "report.json").read_text())
    assert report["sizing"]["esps_rate_sum"] == 114.0
    # A sizing against another profile, or an --esp-rate, replaces the run's ESPs: nothing listed.
    assert main(["sizing", str(run_dir), "--target", "10/1h", "--esp-rate", "5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["esps"] is None
