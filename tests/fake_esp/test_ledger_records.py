"""What the ESP ledger says about an accepted message: correlation id (configured header, else the
Message-ID), size, recipient count, body hash, AUTH user; bodies kept only when a directory is given."""

from __future__ import annotations

import hashlib
import smtplib

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader


def body(headers: str) -> bytes:
    return (headers + "Subject: s\r\n\r\nhello\r\n").encode()


def test_accepted_record_fields_and_stored_bodies(tmp_path):
    """The record carries id/mid/size/rcpts/sha/key; the body file is the exact bytes, named by hash."""
    bodies = tmp_path / "bodies"
    esp = EspProcess(
        tmp_path / "ledger", store_bodies=bodies, extra_args=["--correlation-header", "X-Trace"],
        log_path=tmp_path / "esp.log",
    )  # fmt: skip
    with esp, smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
        s.login("alice", "secret")
        tagged = body("Message-ID: <m1@x.test>\r\nX-Trace: run-7-1\r\n")
        s.sendmail("a@b.test", ["c@d.test", "e@f.test"], tagged)
        untagged = body("Message-ID: <m2@x.test>\r\n")
        s.sendmail("a@b.test", ["c@d.test"], untagged)
    first, second = LedgerReader(tmp_path / "ledger").merged([Kind.ESP_ACCEPTED])
    assert (first["id"], first["mid"], first["rcpts"], first["key"]) == ("run-7-1", "m1@x.test", 2, "alice")
    assert first["sha"] == hashlib.sha256(tagged).hexdigest() and first["size"] == len(tagged)
    assert (second["id"], second["mid"]) == ("m2@x.test", "m2@x.test")
    assert (bodies / f"{first['sha']}.eml").read_bytes() == tagged
    assert len(list(bodies.iterdir())) == 2


def test_no_bodies_kept_by_default(tmp_path):
    """Without --store-bodies, nothing but the ledger is written."""
    esp = EspProcess(tmp_path / "ledger", log_path=tmp_path / "esp.log")
    with esp, smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
        s.sendmail("a@b.test", ["c@d.test"], body("Message-ID: <m3@x.test>\r\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["esp.log", "ledger"]
    assert [p.name for p in (tmp_path / "ledger").iterdir()] == ["esp-smtp-0.jsonl"]
