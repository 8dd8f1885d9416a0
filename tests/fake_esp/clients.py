"""Real SMTP clients for the fake ESP tests: smtplib step by step (timing each phase) and swaks."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import time
from dataclasses import dataclass, field

import pytest

# -- an SMTP client that times each phase ---------------------------------------------------------------
PHASES = ("connect", "ehlo", "mail", "rcpt", "data", "eod")


@dataclass
class Trace:
    """What a client saw: the reply code per phase reached, the time each phase took, where it ended."""

    codes: dict[str, int | None] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    cut_at: str | None = None  # the phase at which the connection dropped without a reply

    def last(self) -> str:
        return list(self.codes)[-1]


def message(cid: str, size: int = 600) -> bytes:
    head = f"From: s@sender.test\r\nTo: r@rcpt.test\r\nSubject: t\r\nMessage-ID: <{cid}@m.test>\r\n"
    head += f"X-Mailstorm-Id: {cid}\r\n\r\n"
    body = ("x" * 70 + "\r\n") * max(1, size // 72)
    return (head + body).encode()


def smtp_transaction(
    port: int,
    cid: str = "c-1",
    *,
    sender: str = "s@sender.test",
    rcpt: str = "r@rcpt.test",
    timeout: float = 10,
) -> Trace:
    """One connection, one message, step by step with smtplib; stops at the first refusal or cut."""
    tr = Trace()
    s = smtplib.SMTP(timeout=timeout)
    steps = [
        ("connect", lambda: s.connect("127.0.0.1", port)),
        ("ehlo", lambda: s.ehlo("client.test")),
        ("mail", lambda: s.mail(sender)),
        ("rcpt", lambda: s.rcpt(rcpt)),
        ("data", lambda: s.docmd("DATA")),
        ("eod", lambda: (s.send(message(cid) + b".\r\n"), s.getreply())[1]),
    ]
    try:
        for phase, step in steps:
            t0 = time.monotonic()
            try:
                code, text = step()
            except (smtplib.SMTPServerDisconnected, ConnectionError, OSError):
                tr.times[phase] = time.monotonic() - t0
                tr.codes[phase] = None
                tr.cut_at = phase
                return tr
            tr.times[phase] = time.monotonic() - t0
            tr.codes[phase] = code
            tr.texts[phase] = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            ok = {"connect": 220, "data": 354}.get(phase, 250)
            if code != ok:
                return tr
        try:
            s.quit()
        except smtplib.SMTPException:
            pass
    finally:
        s.close()
    return tr


SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks not installed (apt-get install swaks)")


def swaks(
    port: int, cid: str = "c-1", *args: str, timeout: float = 15
) -> tuple[subprocess.CompletedProcess, float]:
    """Run swaks against the ESP; returns (the finished process, seconds it took)."""
    cmd = [
        SWAKS or "swaks", "--server", f"127.0.0.1:{port}", "--from", "s@sender.test", "--to", "r@rcpt.test",
        "--helo", "client.test", "--header", f"X-Mailstorm-Id: {cid}", "--timeout", "10", *args,
    ]  # fmt: skip
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return out, time.monotonic() - t0


def wait_until(pred, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling interval
