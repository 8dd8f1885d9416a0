"""The ``campaign:`` section, the lists it makes or reads, the list server and the triggers, each with
real parts: files on disk, a real HTTP server on loopback, a real subprocess, a real SMTP server."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailstorm.errors import ConfigError, UserError
from mailstorm.harness.campaign import lists
from mailstorm.harness.campaign.serve import ListServer
from mailstorm.harness.campaign.spec import CommandTrigger, HttpTrigger, SmtpTrigger, UnsubscribedColumn
from mailstorm.harness.campaign.trigger import fire
from mailstorm.harness.scenario import load_scenario_text
from tests.harness.sut_support import Sink

BASE = "name: c\nduration: 10s\n"


def test_one_campaign_or_a_list_and_no_load_needed():
    one = load_scenario_text(BASE + "campaign: {id: news-1, recipients: 10, unsubscribed: 10%, at: 2s}\n")
    assert one.load is None and len(one.campaign) == 1
    c = one.campaign[0]
    assert (c.recipients, c.unsubscribed, c.at, c.trigger.via) == (10, 10.0, 2.0, "http")
    two = load_scenario_text(
        BASE + "load: {shape: {kind: steady, rate: 1}}\ncampaign:\n  - {id: a, recipients: 5}\n"
        "  - {id: b, list: x.csv, unsubscribed: {column: gone}, trigger: {via: command, argv: ['true']}}\n"
    )
    assert [c.id for c in two.campaign] == ["a", "b"] and two.load is not None
    assert isinstance(two.campaign[1].unsubscribed, UnsubscribedColumn)
    assert isinstance(two.campaign[1].trigger, CommandTrigger)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("", "a load: section, a campaign: section, or both"),
        ("campaign: {id: a}\n", "exactly one of recipients"),
        ("campaign: {id: a, recipients: 5, list: x.csv}\n", "exactly one of recipients"),
        ("campaign: [{id: a, recipients: 5}, {id: a, recipients: 6}]\n", "used twice"),
        ("campaign: {id: a, recipients: 5, at: 12s}\n", "not before the end of the run"),
        ("campaign: {id: a, recipients: 5, unsubscribed: lots}\n", "not a percentage"),
        ("campaign: {id: a, recipients: 5, unsubscribed: {column: s}}\n", "needs a list file"),
        ("campaign: {id: a, recipients: 5, trigger: {via: pigeon}}\n", "via"),
    ],
)
def test_bad_campaign_sections_are_one_line(body, says):
    with pytest.raises(ConfigError) as err:
        load_scenario_text(BASE + body)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_generated_list_is_the_seeds():
    a = lists.generate(500, 2.0, seed=3)
    assert a == lists.generate(500, 2.0, seed=3)
    assert a != lists.generate(500, 2.0, seed=4)
    assert len({r[0] for r in a}) == 500
    assert sum(r[2] == lists.UNSUBSCRIBED for r in a) == 10
    assert all(r[0].rsplit("@", 1)[1] in lists.DOMAINS for r in a)


def test_a_user_list_is_read_with_its_status_column(tmp_path):
    f = tmp_path / "l.csv"
    f.write_text("Email,Name,gone\na@x.test,A,yes\nb@x.test,B,no\nc@x.test,,\n")
    rows = lists.read(f, UnsubscribedColumn(column="gone"), seed=0)
    assert rows == [
        ("a@x.test", "A", "unsubscribed"),
        ("b@x.test", "B", "subscribed"),
        ("c@x.test", "", "subscribed"),
    ]
    f.write_text("email,status\na@x.test,unsubscribed\nb@x.test,subscribed\n")
    assert [r[2] for r in lists.read(f, None, seed=0)] == ["unsubscribed", "subscribed"]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00", "row 1: not a CSV file"),
        (b"name,address\nA,a@x.test\n", "row 1: no 'email' column"),
        (b"email\na@x.test\nb@x.test\nA@X.test\n", "row 4: duplicate address 'A@X.test' (first on row 2)"),
        (b"email\na@x.test\nnot-an-address\n", "row 3: invalid address 'not-an-address'"),
        (b"email,name\na@x.test\n", "row 2: 1 fields, the header has 2"),
        (b"email\n", "row 2: the list has no recipients"),
    ],
)
def test_a_bad_list_file_is_one_line_naming_file_and_row(tmp_path, content, says):
    f = tmp_path / "list.csv"
    f.write_bytes(content)
    with pytest.raises(UserError) as err:
        lists.read(f, None, seed=0)
    assert str(err.value).startswith(f"{f}: ") and says in str(err.value)


def test_a_bad_list_stops_mailstorm_run_with_exit_2_before_anything_starts(tmp_path):
    f = tmp_path / "list.csv"
    f.write_text("email\na@x.test\na@x.test\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(BASE + f"campaign: {{id: a, list: {f}}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "row 3: duplicate address" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


def test_the_list_server_serves_lists_read_only(tmp_path):
    (tmp_path / "news.csv").write_text("email,name,status\na@x.test,A,subscribed\n")
    (tmp_path / "secret.txt").write_text("no")
    server = ListServer(tmp_path).start()
    try:
        with urllib.request.urlopen(server.url("news"), timeout=5) as resp:
            assert resp.read().startswith(b"email,name,status")
        for path, method, code in (
            ("/news.csv", "POST", 405),
            ("/news.csv", "DELETE", 405),
            ("/secret.txt", "GET", 404),
            ("/../news.csv", "GET", 404),
            ("/", "GET", 404),
        ):
            req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", method=method, data=b"")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=5)
            err.value.close()
            assert err.value.code == code, path
    finally:
        server.stop()


VALUES = {"campaign_id": "n1", "list_path": "/tmp/n1.csv", "list_url": "http://127.0.0.1:9/n1.csv"}
FIELDS = {"subject": "s", "from": "news@x.test"}


def test_triggers_answer_refusals_instead_of_raising(tmp_path):
    server = ListServer(tmp_path).start()  # a real HTTP server that refuses POST
    try:
        url = f"http://127.0.0.1:{server.port}/x"
        refused = fire(HttpTrigger(url=url), VALUES, FIELDS)
        assert (refused.ok, refused.code) == (False, 405)
    finally:
        server.stop()
    nobody = fire(HttpTrigger(url="http://127.0.0.1:1/campaigns"), VALUES, FIELDS)
    assert not nobody.ok and nobody.code is None
    out = tmp_path / "argv"
    ok = fire(
        CommandTrigger(
            argv=(sys.executable, "-c", f"open({str(out)!r},'w').write('{{campaign_id}} {{list_path}}')")
        ),
        VALUES,
        FIELDS,
    )
    assert ok.ok and out.read_text() == "n1 /tmp/n1.csv"
    failed = fire(
        CommandTrigger(argv=(sys.executable, "-c", "import sys; print('no'); sys.exit(3)")), VALUES, FIELDS
    )
    assert (failed.ok, failed.code, failed.text) == (False, 3, "no")


def test_the_smtp_trigger_sends_one_message_to_the_list_address():
    sink = Sink().up()
    try:
        values = {**VALUES, "target_host": sink.host, "target_port": str(sink.port)}
        answer = fire(SmtpTrigger(to="list@lists.test"), values, FIELDS)
        assert answer.ok and sink.rec.rcpts[0][1] == ["list@lists.test"]
        sink.rec.rcpt_replies["list@lists.test"] = "550 5.1.1 no such list"
        refused = fire(SmtpTrigger(to="list@lists.test"), values, FIELDS)
        assert (refused.ok, refused.code) == (False, 550)
    finally:
        sink.down()


def test_prepare_writes_the_run_copy(tmp_path: Path):
    from mailstorm.harness.campaign.spec import CampaignSpec

    made = lists.prepare(CampaignSpec(id="n", recipients=50, unsubscribed=10.0), tmp_path, seed=1)
    assert (made.recipients, made.unsubscribed) == (50, 5)
    assert made.path.read_text().splitlines()[0] == "email,name,status"


def test_a_trigger_the_target_cannot_take_is_refused_before_the_run(tmp_path):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        BASE + 'target: {kind: smtp, endpoints: ["127.0.0.1:2525"]}\ncampaign: {id: a, recipients: 5}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "validate", str(scenario)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "{target_http}: target kind 'smtp' serves no HTTP pages of its own" in done.stderr
