"""Test helper for the backup tests: a run directory driven step by step, so which messages a snapshot
holds is known by construction. The test is the load generator (it submits over SMTP and writes the
``load.submit`` records the generator would) and the timeline (it writes ``chaos.begin``, ``action`` and
``chaos.end`` around each target action as mailstorm.harness.timeline does); the SUT, the fake ESP and
their ledgers are the real ones, and the reports read the directory as they read any run's."""

from __future__ import annotations

import smtplib
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.held import record_held
from mailstorm.harness.targets.base import TargetContext
from mailstorm.ledger import (
    CORRELATION_HEADER,
    Action,
    ChaosBegin,
    ChaosEnd,
    Kind,
    LedgerReader,
    LedgerWriter,
    LoadSubmit,
    RunStarted,
)

HOST = "127.0.0.1"


def message(cid: str) -> str:
    return (
        f"From: load@client.test\r\nTo: rcpt@example.test\r\nSubject: hello {cid}\r\n"
        f"Message-ID: <{cid}@client.test>\r\n{CORRELATION_HEADER}: {cid}\r\n\r\nbody of {cid}\r\n"
    )


class SteppedRun:
    """``run_dir/ledger`` written by hand around real SUT and ESP processes."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.ledger_dir = run_dir / "ledger"
        self.ledger_dir.mkdir(parents=True, exist_ok=True)
        self.timeline = LedgerWriter(self.ledger_dir, "timeline")
        self.load = LedgerWriter(self.ledger_dir, "load")
        self.reader = LedgerReader(self.ledger_dir)
        self.timeline.write(RunStarted(run_id=run_dir.name, name="backup-test", seed=1, duration_s=10.0))
        self._steps = 0

    def submit(self, port: int, ids: list[str]) -> None:
        """Send every id on one connection, each with its ``load.submit`` record."""
        with smtplib.SMTP(HOST, port, timeout=10) as smtp:
            for cid in ids:
                start = time.time_ns()
                smtp.sendmail("load@client.test", ["rcpt@example.test"], message(cid))
                end = time.time_ns()
                self.load.write(
                    LoadSubmit(
                        id=cid,
                        intended=start,
                        start=start,
                        end=end,
                        ok=True,
                        code=250,
                        text="ok",
                        phase="done",
                        target=f"{HOST}:{port}",
                        worker=0,
                        cls="default",
                        size=200,
                        rcpts=1,
                    )
                )

    def act(self, target: Any, kind: str, action: str, **params: Any) -> str:
        """One bare target step, recorded as the timeline records it."""
        label = f"target-{self._steps}"
        self._steps += 1
        what = {"action": action, "params": params}
        self.timeline.write(ChaosBegin(name=label, what="target", params=what))
        started = time.time_ns()
        detail = target.act(action, **params)
        self.timeline.write(Action(what=action, target=kind, ok=True, detail=detail, started=started))
        self.timeline.write(ChaosEnd(name=label, what="target", params=what))
        return detail

    def list_queue(self, target: Any, kind: str) -> int | None:
        """The runner's end-of-drain listing of what the SUT still holds."""
        return record_held(target, self.timeline, kind)

    def esp_counts(self) -> Counter[str]:
        return Counter(r["id"] for r in self.reader.records([Kind.ESP_ACCEPTED]))

    def wait_esp(self, wanted: Counter[str], timeout: float, what: str) -> None:
        """Until the ESP accepted every id at least as often as ``wanted`` says."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.esp_counts()
            if all(got[i] >= n for i, n in wanted.items()):
                return
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)  # polling interval of a real condition

    def close(self) -> None:
        self.timeline.close()
        self.load.close()


@contextmanager
def stepped_run(tmp_path: Path, target):
    """A fake ESP, ``target`` started relaying to it, and the run directory both write their ledgers in;
    yields (run, esp, target, the SUT's SMTP port) and stops everything afterwards."""
    run = SteppedRun(tmp_path / "run")
    esp = EspProcess(run.ledger_dir, seed=3, log_path=tmp_path / "esp.log").start()
    ctx = TargetContext(
        run_dir=run.run_dir, ledger_dir=run.ledger_dir, seed=5, esp_smtp=(esp.smtp_host, esp.smtp_port)
    )
    try:
        (endpoint,) = target.start(ctx)
        yield run, esp, target, endpoint.port
    finally:
        target.stop()
        esp.stop()
        run.close()
