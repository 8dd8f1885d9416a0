"""What the ESP ledger says about an accepted message: correlation id (the named carrier, else the
configured header, else the Message-ID), size, recipient count, body hash, AUTH user; bodies kept only
when a directory is given."""

from __future__ import annotations

import hashlib
import smtplib

import pytest
import requests

from mailstorm.correlation import body_token, tag_recipient
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import SHA_HEX_DIGITS, Kind, LedgerReader
from mailstorm.ports import free_port


def body(headers: str) -> bytes:
    return (headers + "Subject: s\r\n\r\nhello\r\n").encode()


def test_accepted_record_fields_and_stored_bodies(tmp_path):
    """The record carries id/mid/size/rcpts/sha/key (sha: the sha256's first 32 hex digits); the body file
    is the exact bytes, named by the whole sha256, found from the record by its prefix."""
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
    digest = hashlib.sha256(tagged).hexdigest()
    assert first["sha"] == digest[:SHA_HEX_DIGITS] == digest[:32] and first["size"] == len(tagged)
    assert (second["id"], second["mid"]) == ("m2@x.test", "m2@x.test")
    assert (bodies / f"{digest}.eml").read_bytes() == tagged
    (stored,) = bodies.glob(f"{first['sha']}*.eml")
    assert stored.read_bytes() == tagged
    assert len(list(bodies.iterdir())) == 2


def test_no_bodies_kept_by_default(tmp_path):
    """Without --store-bodies, nothing but the ledger is written."""
    esp = EspProcess(tmp_path / "ledger", log_path=tmp_path / "esp.log")
    with esp, smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
        s.sendmail("a@b.test", ["c@d.test"], body("Message-ID: <m3@x.test>\r\n"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["esp.log", "ledger"]
    assert [p.name for p in (tmp_path / "ledger").iterdir()] == ["esp-smtp-0.jsonl"]


def test_a_named_esp_writes_ledger_files_of_its_own_name(tmp_path):
    """--name (one of several ESPs in a run): esp-<name>-smtp-N.jsonl, so the reports tell the ESPs apart."""
    esp = EspProcess(tmp_path / "ledger", log_path=tmp_path / "esp.log", extra_args=["--name", "secondary"])
    with esp, smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
        s.sendmail("a@b.test", ["c@d.test"], body("Message-ID: <m4@x.test>\r\n"))
    assert [p.name for p in (tmp_path / "ledger").iterdir()] == ["esp-secondary-smtp-0.jsonl"]
    (rec,) = LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])
    assert (rec["src"], rec["id"]) == ("esp-secondary-smtp-0", "m4@x.test")


def _sendgrid(esp: EspProcess, to: str, text: str, headers: dict[str, str]) -> None:
    body = {
        "personalizations": [{"to": [{"email": to}]}],
        "from": {"email": "a@b.test"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": text}],
        "headers": headers,
    }
    auth = {"Authorization": "Bearer k"}
    resp = requests.post(f"{esp.http_url}/v3/mail/send", json=body, headers=auth, timeout=10)
    assert resp.status_code == 202, resp.text


@pytest.mark.parametrize("carrier", ["recipient", "body"])
def test_the_named_carrier_gives_the_id_when_headers_were_rewritten(tmp_path, carrier):
    """With --correlation recipient (local+ID@domain) or body ([mailstorm:ID] token), the ESP reads the
    id from that carrier, over SMTP and the HTTP APIs, whatever the headers say; a message without the
    carrier falls back on the header, then the Message-ID."""
    esp = EspProcess(
        tmp_path / "ledger", http_port=free_port(), extra_args=["--correlation", carrier],
        log_path=tmp_path / "esp.log",
    )  # fmt: skip

    def carried(cid: str) -> tuple[str, str]:  # (recipient, text) carrying cid as the ESP is told to read
        if carrier == "recipient":
            return tag_recipient("c@d.test", cid), "hello"
        return "c@d.test", f"{body_token(cid)}\r\n\r\nhello"

    with esp:
        with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
            rcpt, text = carried("run-1-1")
            rebuilt = f"Message-ID: <rebuilt-1@relay.test>\r\nSubject: s\r\n\r\n{text}\r\n"
            s.sendmail("a@b.test", [rcpt], rebuilt.encode())
            s.sendmail(
                "a@b.test", ["c@d.test"], body("Message-ID: <m2@x.test>\r\nX-Mailstorm-Id: run-1-2\r\n")
            )
            s.sendmail("a@b.test", ["c@d.test"], body("Message-ID: <m3@x.test>\r\n"))
        rcpt, text = carried("run-1-4")
        _sendgrid(esp, rcpt, text, {"Message-ID": "<rebuilt-4@relay.test>"})
        _sendgrid(esp, "c@d.test", "hello", {"X-Mailstorm-Id": "run-1-5"})
    got = [(r["proto"], r["id"]) for r in LedgerReader(tmp_path / "ledger").merged([Kind.ESP_ACCEPTED])]
    assert got == [
        ("smtp", "run-1-1"),
        ("smtp", "run-1-2"),
        ("smtp", "m3@x.test"),
        ("http", "run-1-4"),
        ("http", "run-1-5"),
    ]
