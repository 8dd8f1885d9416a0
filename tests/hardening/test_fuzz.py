"""Fuzzed SMTP sessions against the fake ESP and the reference pipeline: valid and invalid commands,
pipelining, binary junk, 10k+ character lines, NULs, bare LF and CR, commands after QUIT, half-closed
sockets, junk DATA bodies. Each session ends (the server closes after the client's QUIT and end of stream)
within its deadline, the server sends nothing but SMTP replies, the process lives on, a well-behaved
client is served between sessions and after them, and every message it sent is kept (ESP) or relayed
(reference). The fake ESP is fuzzed once more with two worker processes and random faults installed, and
with TLS and AUTH required (STARTTLS and implicit): plain sessions against a port that requires TLS, and
sessions that get inside TLS (and, half of them, past AUTH) before the fuzzed steps, AUTH exchanges
among them. MAILSTORM_FUZZ_LONG=1 plays 10,000 sessions per server (2,000 with faults, 10,000 per TLS
mode)."""

from __future__ import annotations

import smtplib
import ssl
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from tests.hardening.fuzz import Secure, play
from tests.hardening.support import LONG, clean_transaction, message, record, wait_until
from tests.strategies import smtp_fault_mixes, smtp_secure_sessions, smtp_sessions

SESSIONS = 10_000 if LONG else 300
FAULTED_SESSIONS = 2_000 if LONG else 100
SECURE_SESSIONS = 10_000 if LONG else 200  # per TLS mode
LOGIN = ("fuzz", "fuzz-pass")
DEADLINE_S = 10.0  # per session: the server answers within ms; 10 s is a hang
CLEAN_EVERY = 10  # a well-behaved client between fuzzed sessions, every this many


def fuzz_settings(examples: int):
    """Hypothesis as the fuzzing wants it: ``examples`` sessions, the same ones on every run (derandomized,
    no database), no deadline (a server's tarpit is a slow example, not a failure), big inputs allowed."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


def fuzz(port: int, alive, label: str) -> tuple[int, list[str], float]:
    """Play SESSIONS fuzzed sessions; returns (sessions played, clean ids served, seconds)."""
    played = 0
    clean: list[str] = []
    t0 = time.monotonic()

    @fuzz_settings(SESSIONS)
    @given(steps=smtp_sessions)
    def session(steps):
        nonlocal played
        result = play(port, steps, DEADLINE_S)
        played += 1
        assert not result.hung, f"{label}: session still open after {DEADLINE_S} s: {steps!r}"[:3000]
        assert result.bad_lines() == [], f"{label}: not SMTP replies {result.bad_lines()[:3]}"
        # The banner comes first; only a client that ended its stream may be closed before it (its EOF
        # can arrive before the session starts: nothing more can be read, so nothing need be said).
        left_early = any(kind == "half_close" for kind, _ in steps) and not result.received
        assert left_early or result.received.startswith(b"220"), result.received[:200]
        assert alive(), f"{label} died after {steps!r}"[:3000]
        if played % CLEAN_EVERY == 0:
            cid = f"clean-{label}-{played}"
            clean_transaction(port, cid)
            clean.append(cid)

    session()
    cid = f"clean-{label}-after"
    clean_transaction(port, cid)
    clean.append(cid)
    return played, clean, time.monotonic() - t0


def test_fake_esp_survives_fuzzed_sessions(esp):
    """Fuzzed sessions never crash or hang the fake ESP; clean clients are served and recorded."""
    played, clean, seconds = fuzz(esp.smtp_port, esp.alive, "esp")
    assert played >= SESSIONS * 0.9  # Hypothesis may stop a little short when it exhausts a space
    kept = {r["id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
    assert set(clean) <= kept
    assert "Traceback" not in esp.log_path.read_text(errors="replace")  # nor a session exception
    record(
        "fuzz.esp", sessions=played, crashes=0, hangs=0, clean_served=len(clean), seconds=round(seconds, 1)
    )


def test_reference_pipeline_survives_fuzzed_sessions(reference, esp):
    """Fuzzed sessions never crash or hang the reference pipeline; the clean clients' messages it
    accepted between them all reach the fake ESP."""
    played, clean, seconds = fuzz(reference.port, reference.alive, "reference")
    assert played >= SESSIONS * 0.9

    def relayed() -> bool:
        kept = {r["id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}
        return set(clean) <= kept

    wait_until(relayed, 60, "the clean messages at the ESP")
    logs = "".join(p.read_text(errors="replace") for p in reference.workdir.glob("reference-*.log"))
    assert "Traceback" not in logs  # no session ended in an exception either
    record(
        "fuzz.reference", sessions=played, crashes=0, hangs=0, clean_served=len(clean),
        seconds=round(seconds, 1),
    )  # fmt: skip


def test_fake_esp_with_random_faults_survives_fuzzed_sessions(tmp_path):
    """Fuzzed sessions against a fake ESP with two worker processes and a random mix of faults installed
    for each (replies, cuts, tarpits, throttles, greylisting, caps, concurrency limits): none hangs,
    every byte is an SMTP reply, the ESP lives on, logs no traceback, and serves a clean client after."""
    played = 0
    with EspProcess(tmp_path / "ledger", seed=4, processes=2, log_path=tmp_path / "esp.log") as esp:

        @settings(
            max_examples=FAULTED_SESSIONS,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(steps=smtp_sessions, faults=smtp_fault_mixes)
        def session(steps, faults):
            nonlocal played
            esp.control.reset()
            for fault in faults:
                esp.control.add_fault(fault)
            result = play(esp.smtp_port, steps, DEADLINE_S * 2)  # a tarpit slows every reply
            played += 1
            assert not result.hung, f"session still open: {steps!r} with {faults!r}"[:3000]
            assert result.bad_lines() == [], (result.bad_lines()[:3], faults)
            assert esp.alive()

        session()
        esp.control.reset()
        clean_transaction(esp.smtp_port, "clean-after-faults")
        log = esp.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    kept = {r["id"] for r in LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])}
    assert "clean-after-faults" in kept
    record("fuzz.esp_with_faults", sessions=played, processes=2, crashes=0, hangs=0)


def clean_secure_transaction(esp: EspProcess, cid: str) -> None:
    """A production client: TLS trusting the CA, AUTH, one message; raises unless it is accepted."""
    ctx = ssl.create_default_context(cafile=str(esp.ca_path))
    if esp.tls == "implicit":
        s = smtplib.SMTP_SSL("127.0.0.1", esp.smtp_port, timeout=10, context=ctx)
    else:
        s = smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10)
        s.starttls(context=ctx)
    with s:
        s.login(*LOGIN)
        s.sendmail("s@sender.test", ["r@rcpt.test"], message(cid))


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_fake_esp_with_tls_and_auth_required_survives_fuzzed_sessions(tmp_path, mode):
    """A fake ESP requiring TLS (STARTTLS with --require-tls, or implicit) and AUTH: fuzzed sessions in
    plain text (on the implicit port: junk where a handshake should be), inside TLS, and inside TLS after
    AUTH, with fuzzed AUTH exchanges among the steps. None hangs, every byte inside the session is an SMTP
    reply, the ESP lives on and logs no traceback, and a production client is served between them."""
    played = 0
    clean: list[str] = []
    t0 = time.monotonic()
    with EspProcess(
        tmp_path / "ledger", seed=6, log_path=tmp_path / "esp.log", tls=mode, require_tls=True,
        auth=[":".join(LOGIN)],
    ) as esp:  # fmt: skip
        ctx = ssl.create_default_context(cafile=str(esp.ca_path))
        how = {"plain": None, "tls": Secure(mode, ctx), "tls+auth": Secure(mode, ctx, LOGIN)}

        @fuzz_settings(SECURE_SESSIONS)
        @given(steps=smtp_secure_sessions, entry=st.sampled_from(sorted(how)))
        def session(steps, entry):
            nonlocal played
            result = play(esp.smtp_port, steps, DEADLINE_S, secure=how[entry])
            played += 1
            assert not result.hung, f"{mode}/{entry}: still open after {DEADLINE_S} s: {steps!r}"[:3000]
            if not (entry == "plain" and mode == "implicit"):  # there, the client's junk meets TLS
                assert result.bad_lines() == [], f"{mode}/{entry}: not SMTP replies {result.bad_lines()[:3]}"
            assert esp.alive(), f"{mode}/{entry}: the ESP died after {steps!r}"[:3000]
            if played % CLEAN_EVERY == 0:
                cid = f"clean-{mode}-{played}"
                clean_secure_transaction(esp, cid)
                clean.append(cid)

        session()
        clean_secure_transaction(esp, f"clean-{mode}-after")
        clean.append(f"clean-{mode}-after")
        log = esp.log_path.read_text(errors="replace")
    assert played >= SECURE_SESSIONS * 0.9
    assert "Traceback" not in log and "Exception" not in log, log[-3000:]
    kept = {r["id"] for r in LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])}
    assert set(clean) <= kept
    record(
        f"fuzz.esp_{mode}_auth", sessions=played, crashes=0, hangs=0, clean_served=len(clean),
        seconds=round(time.monotonic() - t0, 1),
    )  # fmt: skip
