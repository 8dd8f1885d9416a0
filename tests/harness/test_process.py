"""The process target: the reference pipeline run as a plain command, killed with -9 and restarted, and
stalled with SIGSTOP for 10 s, mid-load; every accepted message reaches the ESP; nothing left behind."""

from __future__ import annotations

import os
import sys
import time

import psutil
import pytest

from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.targets.base import TARGETS, Actionable, Alive, TargetContext
from mailstorm.harness.targets.process import ProcessSpec, ProcessTarget
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import port_open
from tests.harness.sut_support import Sink, Submitter


def reference_spec(**extra) -> ProcessSpec:
    command = [
        sys.executable, "-m", "mailstorm.harness.reference",
        "--listen", "{host}:{port}",
        "--queue", "{run_dir}/sut-queue.sqlite",
        "--relay", "smtp://{esp_host}:{esp_port}",
        "--ledger", "{ledger_dir}",
        "--backoff-base", "0.1", "--backoff-max", "0.5",
    ]  # fmt: skip
    return ProcessSpec(command=command, cwd=os.getcwd(), **extra)


@pytest.fixture
def sink():
    s = Sink().up()
    yield s
    s.down()


@pytest.fixture
def ctx(tmp_path, sink):
    return TargetContext(
        run_dir=tmp_path, ledger_dir=tmp_path / "ledger", seed=7, esp_smtp=(sink.host, sink.port)
    )


@pytest.fixture
def target():
    t = ProcessTarget(reference_spec())
    yield t
    t.stop()


def test_registered_with_its_abilities():
    """The process kind is in the registry and is actionable and alive-checkable."""
    assert TARGETS["process"] is ProcessTarget
    t = ProcessTarget(reference_spec())
    assert isinstance(t, Actionable) and isinstance(t, Alive)
    assert {"kill", "pause", "resume", "restart", "stop", "start"} <= t.actions()


def test_kill_9_and_restart_mid_load_loses_nothing(target, ctx, sink):
    """SIGKILL mid-load refuses submissions until restart; every message the SUT accepted before or
    after reaches the ESP (its queue survives the kill), and the counts add up."""
    [ep] = target.start(ctx)
    sub = Submitter(ep.host, ep.port, count=60, interval=0.05, prefix="k", timeout=10).start()
    while len(sub.accepted) < 20:
        time.sleep(0.02)  # waiting for the load to get going before the crash
    first_pid = target.pid
    assert target.act("kill").startswith("SIGKILL")
    assert not target.alive() and not psutil.pid_exists(first_pid)
    time.sleep(0.5)  # the outage window the load runs into
    assert "restarted" in target.act("restart")
    assert target.alive() and target.pid != first_pid
    sub.join(60)
    assert len(sub.accepted) + len(sub.failed) == 60
    assert sub.failed, "the kill window refused no submission: the crash was not seen"
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()
    accepted_in_ledger = {r["id"] for r in LedgerReader(ctx.ledger_dir).records([Kind.SUT_ACCEPTED])}
    assert set(sub.accepted) <= accepted_in_ledger


def test_sigstop_10s_stalls_then_everything_is_delivered(target, ctx, sink):
    """pause (SIGSTOP) for 10 s: submissions hang instead of failing, nothing is relayed meanwhile, and
    after resume (SIGCONT) all of them are accepted and delivered."""
    [ep] = target.start(ctx)
    sub = Submitter(ep.host, ep.port, count=30, interval=0.2, prefix="s", timeout=40).start()
    while len(sub.accepted) < 5:
        time.sleep(0.02)
    assert target.act("pause").startswith("SIGSTOP")
    assert psutil.Process(target.pid).status() == psutil.STATUS_STOPPED
    paused_at, delivered_at_pause = time.monotonic(), len(sink.ids)
    while time.monotonic() - paused_at < 10:
        time.sleep(0.1)  # the stall itself is the behaviour under test
    assert target.alive()
    stalled_progress = len(sink.ids) - delivered_at_pause
    assert target.act("resume").startswith("SIGCONT")
    sub.join(60)
    assert stalled_progress <= 1  # at most a relay already in flight on the ESP side
    assert sorted(sub.accepted) == sorted(f"s-{i}" for i in range(30)) and not sub.failed
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()


def test_stop_leaves_no_process_of_the_group_even_when_stopped(tmp_path, ctx):
    """stop() of a SIGSTOPped SUT that forked a child kills the whole group: no process left."""
    script = (
        "import subprocess, sys, socketserver\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "srv = socketserver.TCPServer(('127.0.0.1', int(sys.argv[1])), socketserver.BaseRequestHandler)\n"
        "srv.serve_forever()"
    )
    t = ProcessTarget(ProcessSpec(command=[sys.executable, "-c", script, "{port}"]))
    [ep] = t.start(ctx)
    leader = psutil.Process(t.pid)
    deadline = time.monotonic() + 10
    while not leader.children() and time.monotonic() < deadline:
        time.sleep(0.05)
    group = [leader, *leader.children(recursive=True)]
    assert len(group) == 2
    t.act("pause")
    t.stop()
    assert not t.alive()
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in group)
    assert not port_open(ep.host, ep.port)
    t.stop()  # idempotent


def test_http_readiness_and_endpoint(ctx):
    """With ready_url the target waits for a 2xx answer, and an http target yields a URL endpoint."""
    spec = ProcessSpec(
        command=[sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}"],
        protocol="http",
        path="/submit",
        ready_url="http://127.0.0.1:{port}/",
    )
    t = ProcessTarget(spec)
    try:
        [ep] = t.start(ctx)
        assert ep.kind == "http" and ep.url == f"http://127.0.0.1:{ep.port}/submit"
    finally:
        t.stop()


def test_a_command_that_dies_or_cannot_run_is_one_clear_error(ctx):
    """A SUT that exits before it is ready, or a command that does not exist, is named in one line."""
    t = ProcessTarget(ProcessSpec(command=[sys.executable, "-c", "raise SystemExit(3)"]))
    with pytest.raises(HarnessError, match="exited before it was ready"):
        t.start(ctx)
    assert not t.alive()
    with pytest.raises(UserError, match="cannot run 'no-such-binary-here'"):
        ProcessTarget(ProcessSpec(command=["no-such-binary-here"])).start(ctx)
    with pytest.raises(UserError, match="unknown action 'explode'"):
        t.act("explode")
