"""What the ESP received: GET /messages (filters, paging, the long poll), GET /messages/{id} and its raw
body, the bound on what is kept, and the fixture's ``fake_esp.messages``; real smtplib and HTTP clients
against the real fake ESP process."""

from __future__ import annotations

import asyncio
import smtplib
import threading
import time
import urllib.error
import urllib.request
from email.message import EmailMessage

import pytest
import requests

from mailstorm.errors import UserError
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.messages import HEADER_BYTES, header_values
from mailstorm.ports import free_port
from tests.browser import Browser, needs_chromium


def mail(sender: str, to: list[str], cid: str, subject: str = "hello", **headers: str) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, ", ".join(to), subject
    m["Message-ID"] = f"<{cid}@m.test>"
    m["X-Mailstorm-Id"] = cid
    for name, value in headers.items():
        m[name.replace("_", "-")] = value
    m.set_content(f"body of {cid}\n")
    return m


def send(port: int, *messages: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        for m in messages:
            s.send_message(m)


def get(url: str, token: str | None = None) -> tuple[int, bytes, str]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def test_filters_paging_and_one_message(fake_esp):
    """Each filter alone (recipient, sender, header present / equal, correlation id, time window) and
    paging newest first; one message has its headers; an unknown id is a 404."""
    send(
        fake_esp.smtp_port,
        mail("app@a.test", ["ann@x.test"], "m-1", Campaign="spring"),
        mail("app@a.test", ["bob@x.test", "Ann@X.test"], "m-2", Campaign="summer"),
        mail("billing@a.test", ["cy@x.test"], "m-3", subject="Invoice"),
    )
    between = time.time()
    send(fake_esp.smtp_port, mail("app@a.test", ["dee@x.test"], "m-4"))

    def ids(**q) -> list[str]:
        return [m["correlation_id"] for m in fake_esp.messages(**q)]

    assert ids() == ["m-4", "m-3", "m-2", "m-1"]
    assert ids(rcpt="ann@x.test") == ["m-2", "m-1"]  # addresses compare case-insensitively
    assert ids(sender="BILLING@a.test") == ["m-3"]
    assert ids(header="campaign") == ["m-2", "m-1"]
    assert ids(header="Campaign: summer") == ["m-2"]
    assert ids(header=["Campaign", "Subject: hello"], rcpt="bob@x.test") == ["m-2"]
    assert ids(id="m-3") == ["m-3"]
    long = "A subject long enough that the sender folds it over two lines of the header block, as RFC 5322"
    send(fake_esp.smtp_port, mail("app@a.test", ["eve@x.test"], "m-5", subject=long))
    assert ids(header=f"Subject: {long}") == ["m-5"]  # compared unfolded
    assert fake_esp.messages(id="m-5")[0]["subject"] == long
    assert ids(since=between) == ["m-5", "m-4"]
    assert ids(until=between) == ["m-3", "m-2", "m-1"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(between + 3600))
    assert ids(since=iso) == []
    page = fake_esp.control.messages(limit=2, offset=2)
    assert (page["total"], page["count"], page["received"], page["kept"]) == (5, 2, 5, 5)
    assert [m["correlation_id"] for m in page["messages"]] == ["m-3", "m-2"]

    (latest,) = fake_esp.messages(id="m-3")
    assert latest["subject"] == "Invoice" and latest["from"] == "billing@a.test"
    assert latest["to"] == ["cy@x.test"] and latest["message_id"] == "m-3@m.test"
    assert latest["proto"] == "smtp" and len(latest["sha256"]) == 64 and "body" not in latest
    one = fake_esp.control.message(latest["id"])
    assert ["X-Mailstorm-Id", "m-3"] in one["headers"] and "body" not in one  # no --store-bodies
    status, raw, _ = get(f"{fake_esp.process.control_url}/messages/{latest['id']}/raw")
    assert status == 404 and b"not stored" in raw
    with pytest.raises(UserError, match="no message with id '9-9'"):
        fake_esp.control.message("9-9")


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("since=yesterday", "since: 'yesterday' is neither epoch seconds nor an ISO 8601 time"),
        ("until=2026-01-01T00:00:00", "until: '2026-01-01T00:00:00' has no time zone"),
        ("limit=0", "limit: 0 is not between 1 and 1000"),
        ("offset=x", "offset: 'x' is not a whole number"),
        ("header=:v", "header: ':v' names no header"),
        ("min=2&timeout=500", "timeout between 0 and 120 s"),
        ("min=two", "min is a whole number"),
    ],
)
def test_a_bad_query_is_a_400_naming_it(fake_esp, query, needle):
    status, body, ctype = get(f"{fake_esp.process.control_url}/messages?{query}")
    assert status == 400 and ctype.startswith("application/json")
    assert needle in body.decode()


def test_long_poll_answers_when_mail_arrives(fake_esp):
    """min=N answers as soon as N messages match (not at the timeout), and at the timeout with what
    there is when they never come."""
    t0 = time.monotonic()
    assert fake_esp.messages(rcpt="late@x.test", min=1, timeout=0.5) == []
    assert time.monotonic() - t0 >= 0.5

    sender = threading.Thread(
        target=send,
        args=(fake_esp.smtp_port, *(mail("a@a.test", ["late@x.test"], f"lp-{i}") for i in range(3))),
    )
    t0 = time.monotonic()
    sender.start()
    got = fake_esp.messages(rcpt="late@x.test", min=3, timeout=20)
    waited = time.monotonic() - t0
    sender.join()
    assert sorted(m["correlation_id"] for m in got) == ["lp-0", "lp-1", "lp-2"]
    assert waited < 10  # answered on arrival, long before the 20 s timeout


def test_bodies_with_store_bodies(tmp_path):
    """With --store-bodies the message carries its body, ``body=1`` adds bodies to the list, and /raw
    gives the bytes the ESP accepted."""
    with EspProcess(tmp_path / "ledger", store_bodies=tmp_path / "bodies") as esp:
        send(esp.smtp_port, mail("a@a.test", ["r@x.test"], "b-1"))
        (listed,) = esp.control.messages(body=True, min=1, timeout=5)["messages"]
        assert "body of b-1" in listed["body"]
        one = esp.control.message(listed["id"])
        assert "body of b-1" in one["body"] and "X-Mailstorm-Id: b-1" in one["body"]
        status, raw, ctype = get(f"{esp.control_url}/messages/{listed['id']}/raw")
        assert status == 200 and ctype == "message/rfc822"
        assert (tmp_path / "bodies" / f"{listed['sha256']}.eml").read_bytes() == raw


def test_http_api_messages_are_listed(tmp_path):
    """A message sent through an ESP's HTTP API is listed with its API and the ESP's message id."""
    with EspProcess(tmp_path / "ledger", http_port=free_port()) as esp:
        body = {
            "personalizations": [{"to": [{"email": "api@x.test"}]}],
            "from": {"email": "app@a.test"},
            "subject": "via api",
            "content": [{"type": "text/plain", "value": "hi"}],
            "headers": {"X-Mailstorm-Id": "h-1"},
        }
        resp = requests.post(
            f"{esp.http_url}/v3/mail/send", json=body, headers={"Authorization": "Bearer k"}, timeout=10
        )
        assert resp.status_code == 202, resp.text
        (m,) = esp.control.messages(rcpt="api@x.test", min=1, timeout=5)["messages"]
        assert (m["proto"], m["api"], m["correlation_id"]) == ("http", "sendgrid", "h-1")
        assert m["from"] == "app@a.test" and m["subject"] is None  # an API request has no MIME head here
        assert m["esp_id"] == resp.headers["X-Message-Id"]


def test_memory_is_bounded_and_workers_are_merged(tmp_path):
    """--keep-messages 3 with two worker processes: each keeps its last three; the list merges both,
    counts every message received, and a long poll over the pipes still answers."""
    with EspProcess(tmp_path / "ledger", processes=2, extra_args=["--keep-messages", "3"]) as esp:
        for i in range(16):  # one connection each: the kernel spreads them over both workers
            send(esp.smtp_port, mail("a@a.test", ["r@x.test"], f"k-{i:02d}"))
        page = esp.control.messages(min=16, timeout=1, limit=100)
        assert page["received"] == 16
        workers = {m["id"].split("-")[0] for m in page["messages"]}
        assert page["kept"] == page["total"] == len(page["messages"]) == 3 * len(workers)
        ids = [m["correlation_id"] for m in page["messages"]]
        assert ids == sorted(ids, reverse=True) and "k-15" in ids and "k-00" not in ids
        one = esp.control.message(page["messages"][-1]["id"])  # asked of the worker that holds it
        assert one["correlation_id"] == ids[-1]
        threading.Thread(target=send, args=(esp.smtp_port, mail("a@a.test", ["new@x.test"], "k-new"))).start()
        (new,) = esp.control.messages(rcpt="new@x.test", min=1, timeout=20)["messages"]
        assert new["correlation_id"] == "k-new"


def test_token_guards_the_messages_not_the_page(tmp_path):
    token = "s3cret-token"
    with EspProcess(tmp_path / "ledger", token=token) as esp:
        assert get(f"{esp.control_url}/messages")[0] == 401
        assert get(f"{esp.control_url}/messages", token)[0] == 200
        status, page, ctype = get(f"{esp.control_url}/")
        assert status == 200 and ctype.startswith("text/html") and b"Latest messages" in page


def test_keep_messages_zero_keeps_none(tmp_path):
    with EspProcess(tmp_path / "ledger", extra_args=["--keep-messages", "0"]) as esp:
        send(esp.smtp_port, mail("a@a.test", ["r@x.test"], "z-1"))
        page = esp.control.messages()
        assert (page["total"], page["received"]) == (0, 1)


@pytest.mark.browser
@needs_chromium
def test_the_page_lists_messages_and_faults_live(tmp_path):
    """The control API's page in headless Chromium: the active fault listed, then a message sent while
    the page is open appears without a reload; the page asks nothing of any other origin."""
    fault = {"name": "slow-rcpt", "type": "latency", "phase": "rcpt", "ms": 1}
    with EspProcess(tmp_path / "ledger", faults=[fault]) as esp:

        async def session() -> None:
            async with Browser(tmp_path, 1200, 700) as b:
                await b.goto(esp.control_url + "/")
                rows = "document.querySelector('#messages tbody').textContent"
                await b.wait_for(f"{rows}.includes('nothing received yet')", what="the empty list")
                faults = await b.eval("document.querySelector('#faults tbody').textContent")
                assert "slow-rcpt" in faults and "latency" in faults and "rcpt" in faults
                await asyncio.to_thread(
                    send, esp.smtp_port, mail("app@a.test", ["live@x.test"], "page-1", subject="Seen live")
                )
                await b.wait_for(f"{rows}.includes('Seen live')", what="the message on the page")
                text = await b.eval(rows)
                assert "live@x.test" in text and "page-1" in text and "app@a.test" in text
                assert "1 kept of 1 received" in await b.eval("document.getElementById('kept').textContent")
                await b.screenshot(tmp_path / "esp-page.png")
                assert all(u.startswith(esp.control_url + "/") for u in b.requests), b.requests
                assert b.console_errors == []

        asyncio.run(session())


def test_header_values_unfold_repeat_and_cut():
    """Header search in a kept block: every occurrence, a folded value unfolded, the name at a line's
    start only, and a header cut by the HEADER_BYTES limit left out."""
    head = b"Subject: a long\r\n\tsubject line\r\nX-A: 1\r\nX-Not-A: 9\r\nx-a:3"
    assert list(header_values(head, head.lower(), b"subject")) == [b"a long subject line"]
    assert list(header_values(head, head.lower(), b"x-a")) == [b"1", b"3"]
    cut = (b"From: me@a.test\r\nX-Long: " + b"z" * HEADER_BYTES)[:HEADER_BYTES]
    assert list(header_values(cut, cut.lower(), b"from")) == [b"me@a.test"]
    assert list(header_values(cut, cut.lower(), b"x-long")) == []
