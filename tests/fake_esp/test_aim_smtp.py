"""Aimed faults over SMTP (smtplib): each ``match`` key hits only the steps it names, ``count`` ends the
fault after N actions (recorded, gone from the control API), ``attempts`` picks a message's Nth tries."""

from __future__ import annotations

import smtplib

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind
from tests.fake_esp.clients import message, smtp_transaction

REFUSE = "550 5.7.1 aimed"


def refused(port: int, cid: str, **kw: str) -> str | None:
    """The phase at which one transaction was refused with REFUSE's code, or None when it went through."""
    tr = smtp_transaction(port, cid, **kw)
    bad = [p for p, c in tr.codes.items() if c == 550]
    assert tr.cut_at is None and (bad or tr.codes.get("eod") == 250), tr
    return bad[0] if bad else None


def send_with_headers(port: int, cid: str, extra: str) -> int:
    """One message whose header block also holds ``extra``; the code of the reply to its final "."."""
    body = message(cid).replace(b"Subject: t\r\n", f"Subject: t\r\n{extra}\r\n".encode())
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("s@sender.test")
        s.rcpt("r@rcpt.test")
        code, _ = s.data(body)
        return code


@pytest.mark.parametrize(
    ("phase", "match", "hit", "miss"),
    [
        ("rcpt", {"rcpt": "vip@rcpt.test"}, {"rcpt": "VIP@rcpt.test"}, {"rcpt": "other@rcpt.test"}),
        ("rcpt", {"rcpt": "re:^bob\\+\\d+@"}, {"rcpt": "bob+12@x.test"}, {"rcpt": "bob+ab@x.test"}),
        ("eod", {"rcpt_domain": "*.bad.test"}, {"rcpt": "a@mx.bad.test"}, {"rcpt": "a@good.test"}),
        ("mail", {"mail_from": "*@spammy.test"}, {"sender": "x@spammy.test"}, {"sender": "x@fine.test"}),
        ("rcpt", {"mail_from": "re:^news"}, {"sender": "news@s.test"}, {"sender": "info@s.test"}),
    ],
)
def test_each_match_key_hits_only_its_steps(esp, phase, match, hit, miss):
    """A reply fault aimed with one match key refuses the transaction that shows it (glob: case-
    insensitive, whole value; ``re:``: a search) at its phase, and lets the one that does not through."""
    esp.control.add_fault({"type": "reply", "phase": phase, "reply": REFUSE, "match": match})
    assert refused(esp.port, "aim-hit", **hit) == phase
    assert refused(esp.port, "aim-miss", **miss) is None


def test_match_on_a_header_at_eod(esp):
    """match.header {name: regex}: only a message whose header matches is refused after its data."""
    esp.control.add_fault(
        {"type": "reply", "phase": "eod", "reply": REFUSE, "match": {"header": {"x-tenant": "^acme-\\d+$"}}}
    )
    assert send_with_headers(esp.port, "h-hit", "X-Tenant: acme-7") == 550
    assert send_with_headers(esp.port, "h-miss", "X-Tenant: globex-7") == 250
    assert send_with_headers(esp.port, "h-none", "X-Other: acme-7") == 250


def test_match_on_the_client_ip(esp):
    """match.client_ip: a glob on the client's address (127.0.0.1 here) hits; another address misses."""
    fid = esp.control.add_fault(
        {"type": "reply", "phase": "mail", "reply": REFUSE, "match": {"client_ip": "127.*"}}
    )
    assert refused(esp.port, "ip-hit") == "mail"
    esp.control.remove_fault(fid)
    esp.control.add_fault(
        {"type": "reply", "phase": "mail", "reply": REFUSE, "match": {"client_ip": "10.0.0.*"}}
    )
    assert refused(esp.port, "ip-miss") is None


def test_match_on_the_auth_user(tmp_path):
    """match.auth_user: the session of the matching AUTH user is refused at MAIL, another user's is not."""
    with EspProcess(
        tmp_path / "l", auth=["alice:pw-alice", "bob:pw-bob"], log_path=tmp_path / "e.log"
    ) as esp:
        esp.control.add_fault(
            {"type": "reply", "phase": "mail", "reply": REFUSE, "match": {"auth_user": "alice"}}
        )
        for user, want in (("alice", 550), ("bob", 250)):
            with smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10) as s:
                s.ehlo("client.test")
                s.login(user, f"pw-{user}")
                assert s.mail("s@sender.test")[0] == want


def test_count_ends_the_fault_after_n_matching_steps(esp):
    """count 2 with a match: the next two matching transactions are refused (a non-matching one between
    them is not counted), then the fault ends itself: an esp.fault.ended record, gone from GET /faults."""
    fid = esp.control.add_fault(
        {"type": "reply", "phase": "rcpt", "reply": REFUSE, "match": {"rcpt_domain": "bad.test"}, "count": 2}
    )
    assert refused(esp.port, "c1", rcpt="a@bad.test") == "rcpt"
    assert refused(esp.port, "c2", rcpt="a@good.test") is None
    assert refused(esp.port, "c3", rcpt="b@bad.test") == "rcpt"
    assert refused(esp.port, "c4", rcpt="c@bad.test") is None
    assert [f["id"] for f in esp.control.faults()] == []
    (ended,) = [r for r in esp.ledger.records([Kind.ESP_FAULT_ENDED]) if r["fault"] == fid]
    assert (ended["reason"], ended["acted"], ended["phase"]) == ("count", 2, "rcpt")


@pytest.mark.parametrize(("attempts", "refused_tries"), [([1], {1}), ([2, 3], {2, 3})])
def test_attempts_pick_a_messages_nth_tries(esp, attempts, refused_tries):
    """attempts [1]: each message's first try is refused after its data and its retry is accepted;
    [2, 3]: the first try passes, the second and third are refused, the fourth passes. Counted per
    correlation id: two messages interleaved each get their own count."""
    esp.control.add_fault(
        {"type": "reply", "phase": "eod", "reply": "451 4.3.0 try again", "attempts": attempts}
    )
    for attempt in range(1, 5):
        for cid in (f"att-a-{attempts}", f"att-b-{attempts}"):
            code = smtp_transaction(esp.port, cid).codes["eod"]
            assert code == (451 if attempt in refused_tries else 250), (cid, attempt)
