"""Test helpers for the SUT targets: a real SMTP sink that records the correlation id of every message it
receives (stands in for the ESP where a test needs to switch it off and on), a bounded submitter,
``mailstorm run`` as a subprocess with the checks its run directory needs, and what a killed run left."""

from __future__ import annotations

import email
import smtplib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from aiosmtpd.controller import Controller

from mailstorm import replies
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port


class _Recorder:
    """Keeps the correlation id of every message; answers ``reply`` after DATA (250 unless set) and
    ``rcpt_replies[address]`` at RCPT."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.rcpts: list[tuple[str, list[str]]] = []  # (id, envelope recipients) of each kept message
        self.reply: str | None = None
        self.rcpt_replies: dict[str, str] = {}  # recipient -> refusal at RCPT
        self.data_replies = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return str(replies.OK)

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_replies += 1
            if self.reply is not None:
                return self.reply
            msg = email.message_from_bytes(envelope.original_content or envelope.content)
            self.ids.append(msg.get(CORRELATION_HEADER, ""))
            self.rcpts.append((self.ids[-1], list(envelope.rcpt_tos)))
        return str(replies.OK_QUEUED)


class Sink:
    """A real aiosmtpd server on a fixed free loopback port standing in for the ESP: ``down()``/``up()``
    make an outage, ``rec.reply`` / ``rec.rcpt_replies`` make it refuse."""

    def __init__(self) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self.rec = _Recorder()
        self._ctl: Controller | None = None

    def up(self) -> Sink:
        self._ctl = Controller(self.rec, hostname=self.host, port=self.port)
        self._ctl.start()
        return self

    def down(self) -> None:
        if self._ctl is not None:
            self._ctl.stop()
            self._ctl = None

    @property
    def ids(self) -> list[str]:
        with self.rec.lock:
            return list(self.rec.ids)

    def wait_for(self, wanted: set[str], timeout: float) -> set[str]:
        """Poll until every id in ``wanted`` was received; return the ids still missing."""
        deadline = time.monotonic() + timeout
        while (missing := wanted - set(self.ids)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return missing


def message(cid: str) -> str:
    return (
        f"From: load@client.test\r\nTo: rcpt@example.test\r\nSubject: {cid}\r\n"
        f"Message-ID: <{cid}@client.test>\r\n{CORRELATION_HEADER}: {cid}\r\n\r\nbody {cid}\r\n"
    )


@dataclass
class Submitter:
    """Sends ``count`` messages, one per connection, every ``interval`` s, on a thread (bounded in count
    and time); records which ids the SUT accepted (250) and which failed."""

    host: str
    port: int
    count: int
    interval: float
    prefix: str = "m"
    timeout: float = 30.0
    accepted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Submitter:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "submitter did not finish"

    def _run(self) -> None:
        t0 = time.monotonic()
        for i in range(self.count):
            delay = t0 + i * self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # the open-model send schedule, not a readiness wait
            cid = f"{self.prefix}-{i}"
            try:
                with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as s:
                    s.sendmail("load@client.test", ["rcpt@example.test"], message(cid))
                self.accepted.append(cid)
            except (smtplib.SMTPException, OSError):
                self.failed.append(cid)


ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "scenarios" / "library"


def run_cli(scenario: Path, out: Path, *args: str, timeout: float = 300) -> tuple[int, Path, str]:
    """``mailstorm run`` as a user runs it (a subprocess); the exit code, the run directory, stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(out), "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    dirs = sorted(out.glob("*")) if out.exists() else []
    assert len(dirs) == 1, f"expected one run directory, got {dirs}: {proc.stderr}"
    return proc.returncode, dirs[0], proc.stderr


def lost_and_counts(run_dir: Path) -> tuple[set[str], int, int]:
    """Ids the SUT accepted that never reached the ESP, the number accepted, the number the ESP kept."""
    reader = LedgerReader(run_dir / "ledger")
    accepted = {r["id"] for r in reader.records([Kind.LOAD_SUBMIT]) if r["ok"]}
    at_esp = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])}
    return accepted - at_esp, len(accepted), len(at_esp)


def chaos_window(run_dir: Path, name: str) -> tuple[int, int]:
    """(begin, end) timestamps (ns) of the named chaos step on the run's timeline."""
    timeline = LedgerReader(run_dir / "ledger").merged([Kind.CHAOS_BEGIN, Kind.CHAOS_END])
    begin = next(r["t"] for r in timeline if r["k"] == Kind.CHAOS_BEGIN and r["name"] == name)
    end = next(r["t"] for r in timeline if r["k"] == Kind.CHAOS_END and r["name"] == name)
    return begin, end


def start_run(scenario: Path, out: Path, stderr: Path) -> subprocess.Popen[bytes]:
    """``mailstorm run`` in a session of its own (so a signal can be aimed at the runner alone)."""
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(out), "--quiet"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )


def wait_for_load(run: subprocess.Popen[bytes], out: Path, stderr: Path, timeout: float = 90) -> Path:
    """The run directory, once the load has submitted a message (the parts are all up)."""
    deadline = time.monotonic() + timeout
    while not any(b'"k":"load.submit"' in p.read_bytes() for p in out.glob("*/ledger/load-*.jsonl")):
        assert run.poll() is None, stderr.read_text()
        assert time.monotonic() < deadline, "the run did not get to its load phase"
        time.sleep(0.1)  # polling the ledger for the load's first submission
    (run_dir,) = out.glob("*")
    return run_dir


def processes_of(root: Path) -> list[psutil.Process]:
    """Live processes whose command line or environment names ``root`` or a path under it."""
    needle = str(root.resolve())
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            texts = [*proc.cmdline(), *proc.environ().values()]
            if any(needle in t for t in texts):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def gone_within(root: Path, seconds: float) -> list[psutil.Process]:
    """Poll until no process names ``root``; return those still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (left := processes_of(root)) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the process table
    return left


def cleanup(out: Path) -> subprocess.CompletedProcess[str]:
    """``mailstorm cleanup --out OUT`` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "cleanup", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


OUTCOME_COLUMNS = (
    "submitted",
    "delivered",
    "duplicated",
    "bounced",
    "pending",
    "lost",
    "rejected",
    "uncorrelated",
)


def _outcomes(names: list[str], cells: list[int]) -> dict[str, int]:
    """A table's columns as report.json's ``outcomes`` (offered = submitted; uncorrelated 0 when the table
    leaves it out), plus ``planned`` and ``dropped``."""
    table = dict(zip(["submitted" if n == "offered" else n for n in names], cells, strict=True))
    assert set(table) <= {"planned", "dropped", *OUTCOME_COLUMNS}, names
    return {"uncorrelated": 0, **table}


def console_outcomes(stderr: str) -> dict[str, int]:
    """The outcome table ``mailstorm run`` prints last (the live counts): its two last lines."""
    header, row = stderr.strip().splitlines()[-2:]
    return _outcomes([n.lower() for n in header.split()], [int(c.replace(",", "")) for c in row.split()])


def report_md_outcomes(run_dir: Path) -> dict[str, int]:
    """The outcome table of ``report.md`` (the batch counts), read as a person reads it."""
    lines = (run_dir / "report.md").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("| Planned |"))
    header = [c.strip().lower() for c in lines[at].strip("|").split("|")]
    cells = [int(c.strip().replace(",", "")) for c in lines[at + 2].strip("|").split("|")]
    return _outcomes(header, cells)


def without_load(table: dict[str, int]) -> dict[str, int]:
    """A table's outcomes alone (report.json's ``outcomes``)."""
    return {k: v for k, v in table.items() if k not in ("planned", "dropped")}
