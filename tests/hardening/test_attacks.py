"""Resource attacks on the fake ESP, its peak memory measured in each (psutil on its pid):

- slowloris: 200 connections trickling a byte a second into a command, and 50 into a DATA body, are
  closed at the idle timeout, however long they keep trickling;
- a 50 MB message (over the 10 MiB limit, no SIZE=) gets 552, with memory growing by less than a quarter
  of the message;
- 10,000 RCPT in one envelope: 250 up to the recipient limit (1,000), 452 past it;
- 1,000 simultaneous connections past a concurrency limit of 100: 100 banners, 900 times 421.

Each test ends with a clean transaction served: the attack left the ESP working.
"""

from __future__ import annotations

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.replies import MESSAGE_TOO_BIG, TOO_MANY_CONNECTIONS, TOO_MANY_RECIPIENTS
from tests.hardening import attacks
from tests.hardening.support import PeakMemory, clean_transaction, record

IDLE_S = 3.0
MB = 1024 * 1024


@pytest.fixture(scope="module")
def esp(tmp_path_factory: pytest.TempPathFactory):
    """A fake ESP with a short idle timeout; the size (10 MiB) and recipient (1,000) limits default."""
    d = tmp_path_factory.mktemp("attacked")
    with EspProcess(
        d / "ledger", seed=3, log_path=d / "esp.log", extra_args=["--idle-timeout", str(IDLE_S)]
    ) as proc:
        yield proc


def served(esp: EspProcess, cid: str) -> None:
    clean_transaction(esp.smtp_port, cid)
    assert cid in {r["id"] for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])}


@pytest.mark.parametrize(("connections", "in_data"), [(200, False), (50, True)], ids=["command", "data"])
def test_slowloris_meets_the_idle_timeout(esp, connections, in_data):
    """Connections sending a byte a second are closed at the idle timeout (the trickle does not reset
    it), well before the attacker would stop."""
    with PeakMemory(esp.pid) as mem:
        lifetimes = attacks.slowloris(esp.smtp_port, connections, in_data=in_data, limit_s=IDLE_S * 5)
    assert len(lifetimes) == connections
    # Each lifetime counts from the end of its own set-up; a session may have waited for its turn.
    assert max(lifetimes) < IDLE_S + 2.5, sorted(lifetimes)[-5:]
    # Closed by the timeout, not at once for the junk (a slow banner under load may eat into the 3 s).
    assert min(lifetimes) > IDLE_S / 2, sorted(lifetimes)[:5]
    assert esp.control.counters()["open_sessions"] == 0
    record(
        f"attack.slowloris.{'data' if in_data else 'command'}", connections=connections,
        idle_timeout_s=IDLE_S, max_lifetime_s=round(max(lifetimes), 2),
        baseline_mb=round(mem.baseline / MB, 1), peak_mb=round(mem.peak / MB, 1),
    )  # fmt: skip
    served(esp, f"after-slowloris-{in_data}")


def test_fifty_megabyte_message_gets_552_with_bounded_memory(esp):
    """A 50 MB message against the 10 MiB limit gets 552 once it ends, and is never held: the ESP's
    memory grows by less than a quarter of the message."""
    size = 50 * 1000 * 1000
    with PeakMemory(esp.pid) as mem:
        reply = attacks.big_message(esp.smtp_port, size)
    assert reply.decode() == str(MESSAGE_TOO_BIG)
    assert mem.peak - mem.baseline < size / 4, (mem.baseline, mem.peak)
    record(
        "attack.big_message", size_mb=size / 1e6, reply=reply.decode(),
        baseline_mb=round(mem.baseline / MB, 1), peak_mb=round(mem.peak / MB, 1),
    )  # fmt: skip
    served(esp, "after-big-message")


def test_ten_thousand_recipients_get_452_past_the_limit(esp):
    """10,000 RCPT in one envelope: the first 1,000 (the limit) get 250, the other 9,000 get 452 4.5.3,
    each 452 in the ledger."""
    before = sum(1 for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["code"] == 452)
    with PeakMemory(esp.pid) as mem:
        codes = attacks.many_recipients(esp.smtp_port, 10_000)
    assert codes == {250: 1000, TOO_MANY_RECIPIENTS.code: 9000}
    after = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["code"] == 452]
    assert len(after) - before == 9000 and after[-1]["text"] == str(TOO_MANY_RECIPIENTS)
    record(
        "attack.recipients", rcpt=10_000, codes=dict(codes),
        baseline_mb=round(mem.baseline / MB, 1), peak_mb=round(mem.peak / MB, 1),
    )  # fmt: skip
    served(esp, "after-recipients")


def test_a_thousand_connections_past_the_concurrency_limit_get_421(esp):
    """1,000 connections held at once against a concurrency limit of 100: exactly 100 banners, 900
    times 421 (and those are closed)."""
    esp.control.add_fault({"name": "limit", "type": "concurrency", "max_sessions": 100, "phase": "connect"})
    try:
        with PeakMemory(esp.pid) as mem:
            codes = attacks.many_connections(esp.smtp_port, 1000)
    finally:
        esp.control.remove_fault("limit")
    assert codes == {220: 100, TOO_MANY_CONNECTIONS.code: 900}
    record(
        "attack.connections", connections=1000, max_sessions=100, codes=dict(codes),
        baseline_mb=round(mem.baseline / MB, 1), peak_mb=round(mem.peak / MB, 1),
    )  # fmt: skip
    served(esp, "after-connections")
