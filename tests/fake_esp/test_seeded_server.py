"""Through the real server: the same seed and the same client sequence give the same fault decisions."""

from __future__ import annotations

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from tests.fake_esp.clients import smtp_transaction

FAULTS = [
    {"type": "reply", "phase": "rcpt", "reply": "451 4.3.0 maybe", "probability": 0.3},
    {"type": "disconnect", "phase": "eod", "probability": 0.2},
    {"type": "latency", "phase": "mail", "dist": "uniform", "min_ms": 0, "max_ms": 2, "probability": 0.5},
]


def decisions(tmp_path, name: str, seed: int) -> tuple[list, list]:
    ledger = tmp_path / name
    with EspProcess(ledger, seed=seed, faults=FAULTS, log_path=tmp_path / f"{name}.log") as esp:
        seen = [smtp_transaction(esp.smtp_port, f"d-{i}").codes for i in range(120)]
    recs = LedgerReader(ledger).merged([Kind.ESP_FAULT])
    return seen, [(r["fault"], r["phase"], r["action"], r["delay_s"]) for r in recs]


def test_same_seed_same_decisions_through_smtp(tmp_path):
    """Two ESPs with seed 5 answer 120 sequential transactions identically; seed 6 differs."""
    a = decisions(tmp_path, "a", 5)
    b = decisions(tmp_path, "b", 5)
    assert a == b
    assert {code for codes in a[0] for code in codes.values()} >= {451, 250, None}
    assert decisions(tmp_path, "c", 6) != a
