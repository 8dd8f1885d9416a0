"""Postfix maillog lines become sut.* ledger records: the header_checks INFO line ties a queue id to its
correlation id; sent, deferred (with and without an SMTP reply) and bounced lines follow it."""

from __future__ import annotations

from mailstorm.harness.targets.postfix_maillog import HEADER_CHECK, MaillogFollower, correlation_ids
from mailstorm.ledger import Kind, LedgerReader, LedgerWriter

LINES = """\
Nov 28 00:43:59 sut postfix/smtpd[7090]: 647BA2124C2: client=localhost[127.0.0.1]
Nov 28 00:43:59 sut postfix/cleanup[7095]: 647BA2124C2: info: header X-Mailstorm-Id: run-0-2 from localhost[127.0.0.1]; from=<a@shop.test> to=<b@example.net> proto=ESMTP helo=<loadgen>: mailstorm-id=run-0-2
Nov 28 00:43:59 sut postfix/cleanup[7095]: 647BA2124C2: message-id=<run-0-2@loadgen>
Nov 28 00:43:59 sut postfix/smtp[7096]: 647BA2124C2: to=<b@example.net>, relay=127.0.0.1[127.0.0.1]:39379, delay=0.16, delays=0.01/0/0/0.15, dsn=4.7.0, status=deferred (host 127.0.0.1[127.0.0.1] said: 454 4.7.0 Throttling failure: Maximum sending rate exceeded (in reply to end of DATA command))
Nov 28 00:44:00 sut postfix/smtp[7096]: 647BA2124C2: to=<b@example.net>, relay=none, delay=1, delays=1/0/0/0, dsn=4.4.1, status=deferred (connect to 127.0.0.1[127.0.0.1]:39379: Connection refused)
Nov 28 00:44:02 sut postfix/smtp[7096]: 647BA2124C2: to=<b@example.net>, relay=127.0.0.1[127.0.0.1]:39379, delay=3, delays=3/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)
Nov 28 00:44:02 sut postfix/cleanup[7095]: 7000A2124C9: info: header X-Mailstorm-Id: run-0-3 from localhost[127.0.0.1]; from=<a@shop.test> to=<c@example.net> proto=ESMTP helo=<loadgen>: mailstorm-id=run-0-3
Nov 28 00:44:02 sut postfix/smtp[7096]: 7000A2124C9: to=<c@example.net>, relay=127.0.0.1[127.0.0.1]:39379, delay=0.1, delays=0/0/0/0.1, dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 No such user (in reply to RCPT TO command))
Nov 28 00:44:02 sut postfix/smtp[7096]: 8000A2124C9: to=<d@example.net>, relay=none, status=sent (250 2.0.0 Ok: not ours)
"""  # noqa: E501  (real maillog lines, kept whole)


def test_maillog_lines_become_sut_records(tmp_path):
    """accepted, two deferrals (454 and a refused connection, code null), relayed 250 on attempt 3, and
    a 550 bounce; a queue id never tied to a correlation id (Postfix's own mail) writes nothing."""
    log = tmp_path / "maillog"
    log.write_text(LINES[:200])  # a partial line first: the follower must wait for its end
    with LedgerWriter(tmp_path / "ledger", "postfix") as writer:
        follower = MaillogFollower(log, writer).start()
        with log.open("a") as fh:
            fh.write(LINES[200:])
        follower.stop()
    recs = [
        (r["k"], r["id"], r.get("attempt"), r.get("code"))
        for r in LedgerReader(tmp_path / "ledger").records()
    ]
    assert recs == [
        (Kind.SUT_ACCEPTED, "run-0-2", None, None),
        (Kind.SUT_DEFERRED, "run-0-2", 1, 454),
        (Kind.SUT_DEFERRED, "run-0-2", 2, None),
        (Kind.SUT_RELAYED, "run-0-2", 3, 250),
        (Kind.SUT_ACCEPTED, "run-0-3", None, None),
        (Kind.SUT_BOUNCED, "run-0-3", None, 550),
    ]
    deferred = next(LedgerReader(tmp_path / "ledger").records([Kind.SUT_DEFERRED]))
    assert "Throttling failure" in deferred["text"] and deferred["queue_id"] == "647BA2124C2"
    assert follower.ids() == {"647BA2124C2": "run-0-2", "7000A2124C9": "run-0-3"}


def test_queue_ids_map_to_correlation_ids_from_the_maillog_alone(tmp_path):
    """What the follower has not read yet (or with follow_maillog off), the maillog file itself maps: every
    header_checks line's queue id to its correlation id; no maillog, no mapping."""
    log = tmp_path / "maillog"
    log.write_text(LINES)
    assert correlation_ids(log) == {"647BA2124C2": "run-0-2", "7000A2124C9": "run-0-3"}
    assert correlation_ids(tmp_path / "absent") == {}


def test_header_check_rule_names_the_correlation_header():
    """The header_checks rule matches the harness's correlation header and tags the id for the follower."""
    assert HEADER_CHECK.startswith("/^X-Mailstorm-Id:") and "INFO mailstorm-id=$1" in HEADER_CHECK
