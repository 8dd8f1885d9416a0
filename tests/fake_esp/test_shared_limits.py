"""Limits in windows and limits of the whole ESP: a quota answers SES's daily-quota text word for word
until its window ends, then accepts again; the profiles carry their published quotas; and with
``--processes 2`` a rate, a quota, a count and a concurrency limit hold across both workers together."""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter

import pytest

from mailstorm.fake_esp.faults.quota import window_of
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.replies import SES_DAILY_QUOTA
from tests.fake_esp.clients import smtp_transaction, wait_until

WINDOW_S = 1.5  # a short "day": the window is the quota fault's own field


def send(port: int, i: int) -> str:
    """One message on its own connection: "250", or the code and text of the refusal after its data."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        try:
            s.sendmail("app@example.test", ["user@example.test"], f"Subject: {i}\r\n\r\nbody\r\n")
            return "250"
        except smtplib.SMTPDataError as exc:
            return f"{exc.smtp_code} {exc.smtp_error.decode()}"


def test_daily_quota_answers_ses_text_then_the_next_window_accepts(esp):
    """A quota of 3 per (short) window: within one window, 3 accepted then SES's exact "454 Throttling
    failure: Daily message quota exceeded"; once the next window begins, accepted again."""
    esp.control.add_fault({"type": "quota", "limit": 3, "window": WINDOW_S})
    # Start at the beginning of a window, so the four sends below fall in one.
    start = (window_of(time.time(), WINDOW_S) + 1) * WINDOW_S
    wait_until(lambda: time.time() >= start, timeout=5, what="a window to begin")
    answers = [send(esp.port, i) for i in range(4)]
    assert window_of(time.time(), WINDOW_S) == window_of(start, WINDOW_S), "the sends spanned two windows"
    assert answers == ["250"] * 3 + [str(SES_DAILY_QUOTA)]
    assert str(SES_DAILY_QUOTA) == "454 Throttling failure: Daily message quota exceeded"
    nxt = (window_of(time.time(), WINDOW_S) + 1) * WINDOW_S
    wait_until(lambda: time.time() >= nxt, timeout=5, what="the next window")
    assert send(esp.port, 5) == "250"


def test_quota_over_http_is_a_429_that_resets_with_the_window(tmp_path):
    """Over SES's API (boto3) a quota past its limit is TooManyRequestsException, with the quota's words."""
    from botocore.exceptions import ClientError

    from mailstorm.ports import free_port
    from tests.fake_esp.esps.test_ses import ses_send

    quota = {"type": "quota", "phase": "http", "key": "api_key", "limit": 2, "window": "day"}
    with EspProcess(
        tmp_path / "l", http_port=free_port(), faults=[quota], log_path=tmp_path / "e.log"
    ) as esp:
        ses_send(esp, "q-1")
        ses_send(esp, "q-2")
        with pytest.raises(ClientError) as err:
            ses_send(esp, "q-3")
        assert err.value.response["Error"]["Code"] == "TooManyRequestsException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        ses_send(esp, "q-4", key="AKIDOTHERKEY")  # a count per API key


def test_profiles_carry_their_published_quotas():
    """SES's profile (sandbox): 1/s and 200 per UTC day, the day's quota answered in SES's own words over
    SMTP; a --rate of the user's own (out of the sandbox) leaves the sandbox quota out."""
    faults = {f["name"]: f for f in load_profile("ses").faults()}
    day = faults["profile.quota.day.smtp"]
    assert (day["type"], day["limit"], day["window"], day["reply"]) == (
        "quota",
        200,
        "day",
        str(SES_DAILY_QUOTA),
    )
    assert faults["profile.quota.day.http"]["key"] == "api_key"
    assert not [f for f in load_profile("ses").faults(rate=14) if f["type"] == "quota"]


# -- across worker processes ----------------------------------------------------------------------------
RATE, SECONDS, OFFERED = 14, 4.0, 40


def offered_load(port: int, connections: int = 8) -> tuple[Counter[str], float]:
    """OFFERED messages/s for SECONDS over ``connections`` connections (the kernel spreads them over the
    workers), open loop; the answers and the seconds it took."""
    results: Counter[str] = Counter()
    lock = threading.Lock()
    total = int(OFFERED * SECONDS)
    t0 = time.monotonic() + 0.2

    def worker(k: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            for i in range(k, total, connections):
                delay = t0 + i / OFFERED - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the open-loop schedule: this message's intended time
                try:
                    s.sendmail("app@example.test", ["user@example.test"], f"Subject: {i}\r\n\r\nb\r\n")
                    answer = "250"
                except smtplib.SMTPDataError as exc:
                    answer = str(exc.smtp_code)
                with lock:
                    results[answer] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, time.monotonic() - t0


def per_worker(esp: EspProcess) -> Counter[str]:
    return Counter(r["src"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]))


def test_rate_holds_across_two_workers(tmp_path):
    """``--profile ses --rate 14 --processes 2``, 40/s offered over 8 connections for 4 s: both workers
    accept mail, and together they accept 14/s (within the bucket's depth of 2 plus 10 %), not 28/s;
    the rest get SES's 454 after their data."""
    with EspProcess(
        tmp_path / "l",
        processes=2,
        profile="ses",
        extra_args=["--rate", str(RATE)],
        log_path=tmp_path / "e.log",
    ) as esp:
        results, took = offered_load(esp.smtp_port)
        workers = per_worker(esp)
    assert len(workers) == 2, f"one worker took every connection: {workers}"
    accepted = results["250"]
    assert results["454"] > 0
    assert accepted <= RATE * took * 1.1 + 2, (accepted, took, results)
    assert accepted >= RATE * SECONDS * 0.85, (accepted, took, results)


def test_quota_count_and_concurrency_hold_across_two_workers(tmp_path):
    """With 2 workers: a quota of 5 accepts 5 in all; a count of 3 refuses 3 in all; a concurrency limit
    of 2 refuses the third session open at once, whichever worker it lands on."""
    faults = [
        {"name": "q", "type": "quota", "limit": 5, "window": "day"},
        {"name": "c", "type": "reply", "phase": "rcpt", "reply": "550 5.1.1 counted", "count": 3},
    ]
    with EspProcess(tmp_path / "l", processes=2, faults=faults, log_path=tmp_path / "e.log") as esp:
        answers = Counter(smtp_transaction(esp.smtp_port, f"m{i}").codes.get("eod") for i in range(12))
        assert answers == Counter({250: 5, None: 3, 454: 4}), answers
        assert len(per_worker(esp)) == 2
        esp.control.reset()
        esp.control.add_fault({"type": "concurrency", "max_sessions": 2})
        held = [smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10) for _ in range(2)]
        try:
            refused = 0
            for _ in range(4):  # each new session sees 3 open: refused wherever the kernel puts it
                s = smtplib.SMTP(timeout=10)
                code, _ = s.connect("127.0.0.1", esp.smtp_port)
                refused += code == 421
                s.close()
            assert refused == 4
        finally:
            for s in held:
                s.quit()


def test_http_concurrency_holds_across_two_workers(tmp_path):
    """``--processes 2``, a concurrency limit of 2 at phase http and a 4 s latency holding every request
    in flight: requests sent one after another (each once the ESP has it in flight, its esp.fault record
    written), each on its own connection until both workers have some, get exactly 2 accepted in all and
    429 for the rest (per worker, 2 each would have passed)."""
    from python_http_client.exceptions import HTTPError
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import Mail

    from mailstorm.ports import free_port

    faults = [
        {"name": "slow", "type": "latency", "phase": "http", "dist": "fixed", "ms": 4000},
        {"name": "cap", "type": "concurrency", "phase": "http", "max_sessions": 2},
    ]
    statuses: list[int] = []
    lock = threading.Lock()

    def send(url: str, i: int) -> None:
        mail = Mail("app@example.test", "user@example.test", f"m{i}", plain_text_content="b")
        try:
            status = SendGridAPIClient("SG.k", host=url).send(mail).status_code
        except HTTPError as exc:
            status = exc.status_code
        with lock:
            statuses.append(status)

    with EspProcess(
        tmp_path / "l", processes=2, http_port=free_port(), faults=faults, log_path=tmp_path / "e.log"
    ) as esp:

        def in_flight() -> list[dict]:
            recs = LedgerReader(esp.ledger_dir).records([Kind.ESP_FAULT])
            return [r for r in recs if r["fault"] == "slow"]

        threads: list[threading.Thread] = []
        for i in range(16):  # a new connection each: the kernel spreads them over the two workers
            t = threading.Thread(target=send, args=(esp.http_url, i))
            t.start()
            threads.append(t)
            wait_until(lambda: len(in_flight()) == len(threads), timeout=3, what="the request in flight")
            if len(threads) >= 6 and len({r["src"] for r in in_flight()}) == 2:
                break
        for t in threads:
            t.join(30)
        workers = {r["src"] for r in in_flight()}
    assert len(workers) == 2, f"one worker took every request: {workers}"
    assert Counter(statuses) == Counter({202: 2, 429: len(threads) - 2}), statuses
