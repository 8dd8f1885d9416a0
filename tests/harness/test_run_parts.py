"""The runner's parts on their own: ledger tailing, live counters, probes, the chaos timeline, run dirs."""

from __future__ import annotations

import json
import smtplib
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.chaos_spec import ChaosStep
from mailstorm.harness.esp_setup import esp_process
from mailstorm.harness.probes import Prober, poll_once
from mailstorm.harness.progress import LedgerTail, LiveStats
from mailstorm.harness.run import derive_seed, make_run_dir
from mailstorm.harness.scenario import EspSection, ProbeSpec
from mailstorm.harness.timeline import Timeline
from mailstorm.ledger import Kind, LedgerReader, LedgerWriter, Record, encode_line
from tests.records import accepted, bounced, loose, submit
from tests.reports.fate_forms import sql_counts


def test_tail_returns_only_new_records_and_waits_for_a_line_to_end(tmp_path):
    """Each poll yields what was appended since the last one; a half-written line waits for its end."""
    tail = LedgerTail(tmp_path)
    with LedgerWriter(tmp_path, "a") as a:
        a.write(submit("1", intended=1))
        assert [r.id for r in tail.poll()] == ["1"]
        assert list(tail.poll()) == []
        a.write(submit("2", intended=1))
    line = encode_line(submit("3", intended=1, ok=False), t=1, src="a")
    with (tmp_path / "a.jsonl").open("ab") as fh:
        fh.write(line[:30])
        fh.flush()
        assert [r.id for r in tail.poll()] == ["2"]
        fh.write(line[30:])
    assert [(r.id, r.ok) for r in tail.poll()] == [("3", False)]


def test_tail_final_poll_reads_a_last_line_without_newline_as_the_reports_do(tmp_path):
    """Once every writer has stopped, a complete last line without its newline is a record to the live view
    as it is to the reports' reader; a torn one is skipped by both, so both count the same messages."""
    one, two = submit("1", intended=1), submit("2", intended=2)
    (tmp_path / "a.jsonl").write_bytes(
        encode_line(one, t=1, src="a") + encode_line(two, t=2, src="a").rstrip(b"\n")
    )
    (tmp_path / "b.jsonl").write_bytes(encode_line(accepted("1"), t=3, src="b") + b'{"t":4,"k":"load.su')
    tail, stats = LedgerTail(tmp_path), LiveStats()
    stats.feed(tail.poll())
    assert stats.offered == 1
    stats.feed(tail.poll(final=True))
    assert stats.fates.counts() == sql_counts(tmp_path)
    assert (stats.offered, stats.delivered, stats.backlog) == (2, 1, 1)


def test_tail_skips_lines_of_no_declared_record(tmp_path):
    """A line of an unknown kind, or one lacking a declared field, is skipped by the live view."""
    tail = LedgerTail(tmp_path)
    with LedgerWriter(tmp_path, "a") as a:
        loose(a, "sut.exploded", id="1")
        loose(a, Kind.LOAD_SUBMIT, id="2", ok=True)
        a.write(submit("3", intended=1))
    assert [r.id for r in tail.poll()] == ["3"]


def _at(t: int, rec: Record) -> Record:
    """``rec`` as read back from a ledger: dated ``t``."""
    return msgspec.structs.replace(rec, t=t)


def _submit(mid: str, ok: bool = True, t: int = 1_000_000_000) -> Record:
    return _at(t, submit(mid, intended=t - 5, ok=ok))


def test_live_stats_backlog_follows_ids_whatever_order_the_ledgers_arrive_in():
    """The backlog is the messages the SUT accepted that are neither at the ESP nor bounced; order between
    ledgers does not matter."""
    stats = LiveStats()
    stats.feed(
        iter(
            [
                _at(3, accepted("b")),  # the ESP's record seen before the load's
                _submit("a"),
                _submit("b"),
                _submit("c", ok=False),
                _submit("d"),
                _at(4, bounced("d")),
                _at(5, accepted("b")),
            ]
        )
    )
    assert stats.backlog == 1  # "a"
    assert (stats.offered, stats.accepted, stats.rejected) == (4, 3, 1)
    assert (stats.delivered, stats.duplicates, stats.bounced) == (1, 1, 1)
    assert stats.load_t0_ns == 1_000_000_000 - 5


def test_live_rates_count_whole_recent_seconds():
    """A rate is the count over the last whole seconds, so it reads 20/s for 20 records a second."""
    stats = LiveStats()
    now = 1_000
    stats.feed(iter(_submit(f"{s}-{i}", t=s * 10**9 + i) for s in range(now - 3, now + 1) for i in range(20)))
    assert stats.rate("offered", now_s=now + 0.5) == 20


class _Monitor(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/metrics":
            body, ctype, status = b'# TYPE q gauge\nq{a="1"} 3\nq{a="2"} 4\n', "text/plain", 200
        elif self.path == "/health":
            body, ctype, status = json.dumps({"queue": {"depth": 7}}).encode(), "application/json", 503
        else:
            body, ctype, status = b"{}", "application/json", 404
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def monitor():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Monitor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_probe_reads_a_prometheus_metric_and_a_json_field(monitor):
    """A probe records status, latency and the value asked for (metric summed over labels, or a JSON path)."""
    metric = poll_once(ProbeSpec(url=f"{monitor}/metrics", metric="q"))
    assert metric.status == 200 and metric.ok and metric.value == 7
    health = poll_once(ProbeSpec(url=f"{monitor}/health", json="queue.depth"))
    assert health.status == 503 and not health.ok and health.value == 7
    assert health.latency_s >= 0


def test_probe_of_a_closed_port_records_the_failure():
    """An unreachable probe URL is a record with no status and the reason, not an exception."""
    from mailstorm.ports import free_port

    rec = poll_once(ProbeSpec(url=f"http://127.0.0.1:{free_port()}/health", timeout=0.5))
    assert rec.status is None and not rec.ok and rec.error


def test_prober_polls_at_its_interval_until_stopped(tmp_path, monitor):
    """Probes run on their own thread at their interval and write probe records to the timeline ledger."""
    with LedgerWriter(tmp_path, "timeline") as writer:
        prober = Prober((ProbeSpec(url=f"{monitor}/metrics", metric="q", every=0.1),), writer)
        prober.start()
        deadline = time.monotonic() + 10
        while writer.records_written < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)  # polling the count of records written
        prober.stop()
        written = writer.records_written
        time.sleep(0.3)  # nothing more after stop: wait longer than the interval and look again
        assert writer.records_written == written
    assert LedgerReader(tmp_path).count(Kind.PROBE) == written


@pytest.fixture
def esp(tmp_path):
    """A real fake ESP process on free ports (stopped after the test)."""
    with EspProcess(tmp_path / "esp-ledger", log_path=tmp_path / "esp.log") as process:
        yield process


def test_timeline_adds_and_removes_esp_faults_at_their_times(tmp_path, esp):
    """Each step's fault is at the ESP during its window only, with chaos.begin/end written around it."""
    steps = (
        ChaosStep.model_validate(
            {"at": 0.2, "for": 0.6, "name": "slow", "esp_fault": {"type": "latency", "phase": "eod", "ms": 5}}
        ),
        ChaosStep.model_validate({"at": 0.4, "for": 0.8, "name": "down", "esp_outage": {"mode": "hang"}}),
    )
    with LedgerWriter(tmp_path, "timeline") as writer:
        timeline = Timeline(steps, writer=writer, esp=lambda _name: esp.control)
        t0 = time.monotonic()
        timeline.start(t0)
        seen: dict[str, tuple[float, float]] = {}
        while timeline.done < 4:
            now = time.monotonic() - t0
            assert now < 10
            for f in esp.control.faults():
                first, _ = seen.get(f["id"], (now, now))
                seen[f["id"]] = (first, now)
            time.sleep(0.02)  # sampling the ESP's fault list
        assert esp.control.faults() == []
        timeline.stop()
    assert set(seen) == {"slow", "down"}
    # Sampled every 20 ms from a loaded machine: a window may be seen a little late, never early.
    assert seen["slow"][0] >= 0.15 and seen["slow"][1] <= 0.8 + 0.3
    assert seen["down"][0] >= 0.35 and seen["down"][1] <= 1.2 + 0.3
    records = LedgerReader(tmp_path).merged([Kind.CHAOS_BEGIN, Kind.CHAOS_END])
    assert [(r["k"], r["name"]) for r in records] == [
        (Kind.CHAOS_BEGIN, "slow"),
        (Kind.CHAOS_BEGIN, "down"),
        (Kind.CHAOS_END, "slow"),
        (Kind.CHAOS_END, "down"),
    ]
    assert not timeline.errors


def test_an_esp_that_cannot_be_reached_is_a_timeline_error(tmp_path, esp):
    """A fault that cannot be applied is not silent: it is in errors, naming the step, for the runner."""
    step = ChaosStep.model_validate(
        {"at": 0, "esp_fault": {"type": "reply", "phase": "http", "reply": "451 4.3.0 no"}, "name": "x"}
    )
    with LedgerWriter(tmp_path, "timeline") as writer:
        timeline = Timeline((step,), writer=writer, esp=lambda _name: esp.control)
        esp.kill()  # the ESP is gone: the control API cannot be reached
        timeline.start(time.monotonic())
        deadline = time.monotonic() + 20
        while timeline.done < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)  # waiting for the step to fire
        timeline.stop()
    assert timeline.errors and "x" in timeline.errors[0]


def test_run_directories_are_unique_per_second(tmp_path):
    """Two runs of the same name in the same second get distinct directories."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    a = make_run_dir(tmp_path, "smoke", now)
    b = make_run_dir(tmp_path, "smoke", now)
    assert a.name == "20260102-030405-smoke" and b.name == "20260102-030405-smoke-2"


def test_component_seeds_are_stable_and_distinct():
    """The same scenario seed gives each component the same seed every time, and components differ."""
    assert derive_seed(1, "esp") == derive_seed(1, "esp")
    assert len({derive_seed(1, "esp"), derive_seed(1, "load"), derive_seed(2, "esp")}) == 3


def test_the_scenarios_esp_keeps_what_its_section_says(tmp_path):
    """``esp: {keep_messages: 2}`` reaches the run's fake ESP: of three messages it keeps the last two."""
    esp = esp_process(
        EspSection(keep_messages=2),
        seed=1,
        run_dir=tmp_path,
        ledger_dir=tmp_path / "esp",
        log_path=tmp_path / "esp.log",
        ports=(None, None, None),
    )
    with esp:
        with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
            for i in range(3):
                s.sendmail("a@a.test", ["r@x.test"], f"X-Mailstorm-Id: keep-{i}\r\n\r\nbody\r\n")
        page = esp.control.messages(min=3, timeout=1)
    assert (page["received"], page["kept"]) == (3, 2)
    assert [m["correlation_id"] for m in page["messages"]] == ["keep-2", "keep-1"]
