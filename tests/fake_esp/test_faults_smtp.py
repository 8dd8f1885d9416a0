"""Every fault, installed through the control API, seen by smtplib and swaks at the phase it was set for."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from mailstorm.ledger import Kind
from tests.fake_esp.clients import PHASES, message, needs_swaks, smtp_transaction, swaks, wait_until

DELAY_S = 0.4
SLOW = DELAY_S * 0.85  # a delayed step takes at least this long
# The command swaks shows before the server's answer at each phase ("" = the banner, before any).
SWAKS_CMD = {
    "connect": "",
    "ehlo": "EHLO",
    "mail": "MAIL FROM",
    "rcpt": "RCPT TO",
    "data": "DATA",
    "eod": ".",
}


def since(esp, t0: int, kind: str) -> list[dict]:
    return [r for r in esp.ledger.merged([kind]) if r["t"] >= t0]


def swaks_answer(out: str, prefix: str) -> tuple[str, str] | None:
    """(the last command swaks sent before the first server line starting with ``prefix``, that line)."""
    last_cmd = ""
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("->"):
            last_cmd = line[2:].strip()
        elif line.startswith(("<-", "<**", "<~", "***")) and prefix in line:
            return last_cmd, line
    return None


def cmd_is(phase: str, cmd: str) -> bool:
    want = SWAKS_CMD[phase]
    return cmd == "" if want == "" else cmd.upper().startswith(want) if want != "." else cmd == "."


# -- latency --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", PHASES)
def test_latency_delays_only_its_phase_smtplib(esp, phase):
    """A fixed latency at one phase slows that step by its delay in smtplib's view and no other step."""
    esp.control.add_fault({"type": "latency", "phase": phase, "ms": DELAY_S * 1000})
    tr = smtp_transaction(esp.port, f"lat-{phase}")
    assert tr.codes["eod"] == 250
    assert tr.times[phase] >= SLOW
    assert all(t < SLOW for p, t in tr.times.items() if p != phase), tr.times


@needs_swaks
@pytest.mark.parametrize("phase", PHASES)
def test_latency_seen_by_swaks(esp, phase):
    """swaks completes the transaction, takes at least the delay, and the ESP records it at that phase."""
    t0 = time.time_ns()
    esp.control.add_fault({"type": "latency", "phase": phase, "ms": DELAY_S * 1000})
    out, took = swaks(esp.port, f"lat-sw-{phase}")
    assert out.returncode == 0, out.stdout
    assert took >= SLOW
    assert [r["phase"] for r in since(esp, t0, Kind.ESP_FAULT)] == [phase]


def test_latency_distributions_sample_within_bounds(esp):
    """A uniform latency's waits fall between its bounds; an empirical one picks from its list."""
    esp.control.add_fault(
        {"type": "latency", "phase": "mail", "dist": "uniform", "min_ms": 100, "max_ms": 200}
    )
    esp.control.add_fault({"type": "latency", "phase": "rcpt", "dist": "empirical", "values_ms": [50, 150]})
    t0 = time.time_ns()
    for i in range(5):
        assert smtp_transaction(esp.port, f"dist-{i}").codes["eod"] == 250
    delays = {(r["phase"], r["delay_s"]) for r in since(esp, t0, Kind.ESP_FAULT)}
    assert all(0.1 <= d <= 0.2 for p, d in delays if p == "mail")
    assert {d for p, d in delays if p == "rcpt"} <= {0.05, 0.15}


# -- reply ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", PHASES)
def test_reply_at_phase_smtplib(esp, phase):
    """A reply fault answers its phase with the configured code and text, and is recorded before it."""
    t0 = time.time_ns()
    esp.control.add_fault({"type": "reply", "phase": phase, "reply": f"451 4.3.0 Fault at {phase}"})
    tr = smtp_transaction(esp.port, f"rep-{phase}")
    assert tr.last() == phase
    assert tr.codes[phase] == 451 and f"Fault at {phase}" in tr.texts[phase]
    (rec,) = since(esp, t0, Kind.ESP_REPLIED)
    assert (rec["phase"], rec["code"]) == (phase, 451) and rec["fault"].startswith("reply")
    assert not [r for r in since(esp, t0, Kind.ESP_ACCEPTED) if r["id"] == f"rep-{phase}"]


@needs_swaks
@pytest.mark.parametrize("phase", PHASES)
def test_reply_at_phase_swaks(esp, phase):
    """swaks sees the configured reply right after the command of that phase."""
    esp.control.add_fault({"type": "reply", "phase": phase, "reply": f"554 5.7.1 Rejected at {phase}"})
    out, _ = swaks(esp.port, f"rep-sw-{phase}")
    assert out.returncode != 0
    found = swaks_answer(out.stdout + out.stderr, f"554 5.7.1 Rejected at {phase}")
    assert found is not None, out.stdout
    assert cmd_is(phase, found[0]), found


# -- disconnect ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phase", PHASES)
def test_disconnect_at_phase_smtplib(esp, phase):
    """The connection closes without a reply at the phase; at eod the ESP keeps the message (acked=false)."""
    t0 = time.time_ns()
    esp.control.add_fault({"type": "disconnect", "phase": phase})
    tr = smtp_transaction(esp.port, f"cut-{phase}")
    assert tr.cut_at == phase, tr
    (rec,) = since(esp, t0, Kind.ESP_REPLIED)
    assert rec["phase"] == phase and rec["code"] is None
    kept = [r for r in since(esp, t0, Kind.ESP_ACCEPTED) if r["id"] == f"cut-{phase}"]
    if phase == "eod":
        assert len(kept) == 1 and kept[0]["acked"] is False
    else:
        assert kept == []


@needs_swaks
@pytest.mark.parametrize("phase", PHASES)
def test_disconnect_at_phase_swaks(esp, phase):
    """swaks reports the connection lost right after the command of that phase."""
    esp.control.add_fault({"type": "disconnect", "phase": phase})
    out, _ = swaks(esp.port, f"cut-sw-{phase}")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    found = swaks_answer(text, "***")
    assert found is not None, text
    assert cmd_is(phase, found[0]), (found, text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cut = next(i for i, ln in enumerate(lines) if ln.startswith("***"))
    assert cut == 0 or lines[cut - 1].startswith(("->", "===")), lines  # no answer between command and cut


# -- tarpit -------------------------------------------------------------------------------------------------
def test_tarpit_writes_the_normal_reply_slowly_smtplib(esp):
    """A tarpit at RCPT still answers 250, one byte at a time: the step takes bytes x delay."""
    esp.control.add_fault({"type": "tarpit", "phase": "rcpt", "byte_delay_ms": 50})
    tr = smtp_transaction(esp.port, "tar-1")
    assert tr.codes["rcpt"] == 250 and tr.codes["eod"] == 250
    assert tr.times["rcpt"] >= 0.05 * 6  # "250 OK\r\n" is 8 bytes
    assert tr.times["mail"] < 0.2


def test_tarpit_with_reply_smtplib(esp):
    """A tarpit with a reply answers that reply, slowly."""
    esp.control.add_fault({"type": "tarpit", "phase": "mail", "byte_delay_ms": 20, "reply": "451 4.7.0 Slow"})
    tr = smtp_transaction(esp.port, "tar-2")
    assert tr.codes["mail"] == 451 and tr.times["mail"] >= 0.02 * 14


@needs_swaks
def test_tarpit_seen_by_swaks(esp):
    """swaks gets the banner slowly and then completes the transaction."""
    esp.control.add_fault({"type": "tarpit", "phase": "connect", "byte_delay_ms": 15})
    out, took = swaks(esp.port, "tar-sw")
    assert out.returncode == 0, out.stdout
    assert took >= 0.015 * 30  # the banner is longer than 30 bytes


# -- throttle -----------------------------------------------------------------------------------------------
def test_throttle_token_bucket_per_ip_smtplib(esp):
    """With burst 2 and a near-zero refill, the third message from one IP gets SES's 454 after DATA."""
    esp.control.add_fault({"type": "throttle", "rate": 0.001, "burst": 2, "key": "ip"})
    codes = [smtp_transaction(esp.port, f"thr-{i}").codes.get("eod") for i in range(3)]
    assert codes == [250, 250, 454]


def test_throttle_by_sender_domain_keeps_domains_apart(esp):
    """Keyed by sender domain, one domain's empty bucket does not throttle another domain."""
    esp.control.add_fault(
        {"type": "throttle", "phase": "mail", "rate": 0.001, "burst": 1, "key": "sender_domain"}
    )
    assert smtp_transaction(esp.port, "d-1", sender="a@one.test").codes["mail"] == 250
    assert smtp_transaction(esp.port, "d-2", sender="b@one.test").codes["mail"] == 454
    assert smtp_transaction(esp.port, "d-3", sender="a@two.test").codes["mail"] == 250


@needs_swaks
def test_throttle_seen_by_swaks(esp):
    """swaks sees the 454 after the message data once the bucket is empty."""
    esp.control.add_fault({"type": "throttle", "rate": 0.001, "burst": 1})
    assert swaks(esp.port, "thr-sw-1")[0].returncode == 0
    out, _ = swaks(esp.port, "thr-sw-2")
    found = swaks_answer(out.stdout, "454 4.7.0 Throttling failure")
    assert found is not None and found[0] == ".", out.stdout


# -- concurrency --------------------------------------------------------------------------------------------
def test_concurrency_limit_refuses_past_max_sessions_smtplib(esp):
    """With one session open and max_sessions 1, the next connection gets 421 at the banner and is closed."""
    esp.control.add_fault({"type": "concurrency", "max_sessions": 1})
    held = smtplib.SMTP("127.0.0.1", esp.port, timeout=10)
    try:
        tr = smtp_transaction(esp.port, "conc-1")
        assert tr.codes["connect"] == 421 and "Too many concurrent" in tr.texts["connect"]
    finally:
        held.close()
    wait_until(lambda: esp.control.counters()["open_sessions"] == 0, what="the held session to end")
    assert smtp_transaction(esp.port, "conc-2").codes["eod"] == 250


@needs_swaks
def test_concurrency_limit_seen_by_swaks(esp):
    """swaks, as the session past the limit, sees the 421 banner."""
    esp.control.add_fault({"type": "concurrency", "max_sessions": 1})
    with smtplib.SMTP("127.0.0.1", esp.port, timeout=10):
        out, _ = swaks(esp.port, "conc-sw")
    found = swaks_answer(out.stdout + out.stderr, "421 4.7.0 Too many concurrent")
    assert found is not None and found[0] == "", out.stdout


# -- message cap --------------------------------------------------------------------------------------------
def test_message_cap_per_connection_smtplib(esp):
    """After two messages on one connection, the third MAIL gets 421 and the connection is closed."""
    esp.control.add_fault({"type": "message_cap", "max_messages": 2})
    with smtplib.SMTP("127.0.0.1", esp.port, timeout=10) as s:
        for i in range(2):
            s.sendmail("s@sender.test", ["r@rcpt.test"], message(f"cap-{i}"))
        code, text = s.mail("s@sender.test")
        assert code == 421 and b"Too many messages" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()


@needs_swaks
def test_message_cap_seen_by_swaks(esp):
    """With a cap of 0, swaks sees 421 right after MAIL FROM."""
    esp.control.add_fault({"type": "message_cap", "max_messages": 0})
    out, _ = swaks(esp.port, "cap-sw")
    found = swaks_answer(out.stdout, "421 4.7.0 Too many messages")
    assert found is not None and found[0].upper().startswith("MAIL FROM"), out.stdout


# -- greylist ----------------------------------------------------------------------------------------------
def test_greylist_until_retried_after_period_smtplib(esp):
    """An unseen triplet gets 451 4.7.1 at RCPT, an early retry too, a retry after the period passes."""
    esp.control.add_fault({"type": "greylist", "retry_after_s": 1})
    first = time.monotonic()
    assert smtp_transaction(esp.port, "grey-1").codes["rcpt"] == 451
    assert smtp_transaction(esp.port, "grey-1").codes["rcpt"] == 451
    assert smtp_transaction(esp.port, "grey-1", rcpt="other@rcpt.test").codes["rcpt"] == 451
    time.sleep(max(0.0, first + 1.05 - time.monotonic()))  # the greylist period itself is under test
    assert smtp_transaction(esp.port, "grey-1").codes["eod"] == 250


@needs_swaks
def test_greylist_seen_by_swaks(esp):
    """swaks sees 451 4.7.1 after RCPT TO on its first try, and passes after the period."""
    esp.control.add_fault({"type": "greylist", "retry_after_s": 0.5})
    out, _ = swaks(esp.port, "grey-sw")
    # Counted from swaks' end, not its start: perl's start-up alone can take 0.6 s on a loaded machine,
    # so the triplet may have been seen well after the call began.
    first = time.monotonic()
    found = swaks_answer(out.stdout, "451 4.7.1")
    assert found is not None and found[0].upper().startswith("RCPT TO"), out.stdout
    time.sleep(max(0.0, first + 0.55 - time.monotonic()))  # the greylist period itself is under test
    assert swaks(esp.port, "grey-sw")[0].returncode == 0


# -- outage -------------------------------------------------------------------------------------------------
def refused(port: int) -> bool:
    """Whether a connection to ``port`` is refused now. A reset while connecting (the listener closed
    with this connection still in its accept queue) is the listener going down: asked again."""
    for _ in range(3):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return False
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            continue
    return True


def test_outage_refuse_cuts_sessions_and_comes_back(esp):
    """In a refuse outage an open session is cut and connections are refused; after it, mail flows."""
    held = smtplib.SMTP("127.0.0.1", esp.port, timeout=10)
    held.ehlo("client.test")
    t0 = time.monotonic()
    esp.control.add_fault({"type": "outage", "duration_s": 1.5, "mode": "refuse"})
    wait_until(lambda: refused(esp.port), timeout=2, what="the listener to close")
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        held.mail("s@sender.test")
    held.close()
    tr = smtp_transaction(esp.port, "out-1")
    assert tr.cut_at == "connect"
    wait_until(lambda: not refused(esp.port), timeout=5, what="the listener to come back")
    assert time.monotonic() - t0 >= 1.4
    assert smtp_transaction(esp.port, "out-2").codes["eod"] == 250


@needs_swaks
def test_outage_refuse_seen_by_swaks(esp):
    """swaks cannot connect during a refuse outage and sends normally once it is over."""
    esp.control.add_fault({"type": "outage", "duration_s": 1.0})
    wait_until(lambda: refused(esp.port), timeout=2, what="the listener to close")
    out, _ = swaks(esp.port, "out-sw")
    assert out.returncode != 0 and "refused" in (out.stdout + out.stderr).lower()
    wait_until(lambda: not refused(esp.port), timeout=5, what="the listener to come back")
    assert swaks(esp.port, "out-sw-2")[0].returncode == 0


def test_outage_hang_accepts_and_never_answers(esp):
    """In hang mode a connection is accepted but gets no banner; after the outage, mail flows again."""
    esp.control.add_fault({"type": "outage", "duration_s": 1.5, "mode": "hang"})
    wait_until(lambda: esp.control.faults(), what="the fault to be listed")
    tr = smtp_transaction(esp.port, "hang-1", timeout=0.5)
    assert tr.cut_at == "connect" and tr.times["connect"] >= 0.45
    wait_until(lambda: not esp.control.faults(), timeout=5, what="the outage to end")
    assert smtp_transaction(esp.port, "hang-2").codes["eod"] == 250


@needs_swaks
def test_outage_hang_seen_by_swaks(esp):
    """swaks connects during a hang outage and times out waiting for the banner."""
    esp.control.add_fault({"type": "outage", "duration_s": 3, "mode": "hang"})
    out, _ = swaks(esp.port, "hang-sw", "--timeout", "1")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and ("timeout" in text.lower() or "timed out" in text.lower()), text
    assert not any(line.strip().startswith("<-") for line in text.splitlines())
