"""The postfix target: a throwaway Postfix relaying to a real SMTP server standing in for the ESP; an ESP
outage shows as queue depth rising then draining with nothing lost; kill, restart and flush act on the
real instance; nothing of the instance is left after stop(), after a kill, or after Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from mailstorm.errors import UserError
from mailstorm.harness.targets.base import TARGETS, Actionable, Alive, QueueSampler, TargetContext
from mailstorm.harness.targets.postfix import PostfixSpec, PostfixTarget, postfix_installed
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import port_open
from tests.harness.sut_support import Sink, Submitter

pytestmark = [
    pytest.mark.postfix,
    pytest.mark.skipif(
        postfix_installed() is None, reason="Postfix is not installed (apt-get install postfix)"
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a Postfix instance needs root (set-permissions, chown)"),
]


def instance_processes(conf_dir: Path) -> list[psutil.Process]:
    """Live processes started for the instance with this config dir (by MAIL_CONFIG, not by name)."""
    out = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("MAIL_CONFIG") == str(conf_dir):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture
def sink():
    s = Sink().up()
    yield s
    s.down()


def context(tmp_path: Path, sink: Sink) -> TargetContext:
    return TargetContext(
        run_dir=tmp_path, ledger_dir=tmp_path / "ledger", seed=1, esp_smtp=(sink.host, sink.port)
    )


@pytest.fixture
def postfix(tmp_path, sink):
    t = PostfixTarget(PostfixSpec())
    [ep] = t.start(context(tmp_path, sink))
    yield t, ep
    t.stop()
    assert instance_processes(t.conf_dir) == []


def wait_depth(t: PostfixTarget, pred, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while not pred(depth := t.queue_depth()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return depth


def test_registered_with_its_abilities():
    """postfix is a registered kind that can act, report its queue and say whether it is alive."""
    t = TARGETS["postfix"](PostfixSpec())
    assert isinstance(t, Actionable) and isinstance(t, QueueSampler) and isinstance(t, Alive)
    assert t.actions() == {"stop", "start", "restart", "kill", "flush", "snapshot", "restore", "wipe"}


def test_smoke_relays_to_the_esp(postfix, sink, tmp_path):
    """Messages submitted to the instance are relayed to the ESP, the queue ends empty, and the maillog
    gives each one a sut.accepted and a sut.relayed (250) record."""
    t, ep = postfix
    sub = Submitter(ep.host, ep.port, count=20, interval=0.0, prefix="smoke").start()
    sub.join(60)
    assert len(sub.accepted) == 20
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()
    assert wait_depth(t, lambda d: d == 0, 10) == 0
    ledger = tmp_path / "ledger"
    t.stop()  # the maillog follower reads the last lines when the instance stops
    reader = LedgerReader(ledger)
    assert sorted(r["id"] for r in reader.records([Kind.SUT_ACCEPTED])) == sorted(sub.accepted)
    relayed = list(reader.records([Kind.SUT_RELAYED]))
    assert sorted(r["id"] for r in relayed) == sorted(sub.accepted) and {r["code"] for r in relayed} == {250}
    main_cf = (t.conf_dir / "main.cf").read_text()
    assert f"relayhost = [{sink.host}]:{sink.port}" in main_cf
    assert "minimal_backoff_time = 1s" in main_cf


def test_esp_outage_queue_rises_then_drains_nothing_lost(tmp_path, sink):
    """With the ESP down, Postfix accepts and queues: the sut.queue records the target writes onto the
    ledger rise to every message; when the ESP comes back they drain to 0 and every accepted message is
    delivered: lost = 0."""
    ctx = context(tmp_path, sink)
    t = PostfixTarget(PostfixSpec(queue_sample_s=0.2))
    try:
        [ep] = t.start(ctx)
        sink.down()
        sub = Submitter(ep.host, ep.port, count=60, interval=0.02, prefix="out").start()
        sub.join(60)
        assert len(sub.accepted) == 60

        def depths() -> list[tuple[int, int]]:
            return [(r["t"], r["depth"]) for r in LedgerReader(ctx.ledger_dir).records([Kind.SUT_QUEUE])]

        deadline = time.monotonic() + 15
        while depths()[-1][1] != 60 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the target's sampler has recorded the full queue
        back_ns = time.time_ns()
        sink.up()
        # 60 s: Postfix retries on its backoff (1-2 s here) once its queue manager wakes; on a loaded
        # machine the first-deferred message has been seen to take over 30 s to leave.
        assert sink.wait_for(set(sub.accepted), timeout=60) == set()
        deadline = time.monotonic() + 15
        while depths()[-1][1] != 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the target's own sampler has recorded the drained queue
    finally:
        t.stop()
    during = [d for ts, d in depths() if ts < back_ns]
    after = [d for ts, d in depths() if ts >= back_ns]
    assert during == sorted(during) and during[0] < during[-1] == 60, f"not seen rising to 60: {during}"
    assert after[-1] == 0
    assert all(r["src"] == "postfix" for r in LedgerReader(ctx.ledger_dir).records([Kind.SUT_QUEUE]))
    deferred = {r["id"] for r in LedgerReader(ctx.ledger_dir).records([Kind.SUT_DEFERRED])}
    assert deferred and deferred <= set(sub.accepted)  # refused connections: deferred, code null
    assert len(sink.ids) >= 60  # Postfix may only ever duplicate, never lose


def test_kill_master_then_restart_delivers_the_queue(postfix, sink):
    """kill SIGKILLs the master (the port closes, the instance is dead); restart brings it back and the
    messages queued before the kill are delivered."""
    t, ep = postfix
    sink.down()
    sub = Submitter(ep.host, ep.port, count=10, interval=0.0, prefix="kill").start()
    sub.join(60)
    assert len(sub.accepted) == 10
    assert wait_depth(t, lambda d: d == 10, 15) == 10
    assert t.act("kill").startswith("SIGKILL")
    assert not t.alive()
    deadline = time.monotonic() + 10
    while port_open(ep.host, ep.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not port_open(ep.host, ep.port)
    sink.up()
    assert "restarted" in t.act("restart")
    assert t.alive()
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()


def test_slow_retry_timing_and_flush(tmp_path, sink):
    """With Postfix-like slow retries (60 s backoff) a deferred message waits; flush delivers it now."""
    t = PostfixTarget(PostfixSpec(minimal_backoff_s=60, maximal_backoff_s=120, queue_run_delay_s=60))
    try:
        [ep] = t.start(context(tmp_path, sink))
        sink.down()
        sub = Submitter(ep.host, ep.port, count=3, interval=0.0, prefix="fl").start()
        sub.join(30)
        deadline = time.monotonic() + 15

        # Every message must have been tried (and deferred) before the sink returns; otherwise one not
        # yet tried is delivered at its first attempt, which says nothing about retry timing.
        def deferrals() -> int:
            return (t.maillog.read_text() if t.maillog.exists() else "").count("status=deferred")

        while deferrals() < len(sub.accepted):
            assert time.monotonic() < deadline, "not every message's deferral was logged"
            time.sleep(0.1)
        sink.up()
        assert sink.wait_for(set(sub.accepted), timeout=3) == set(sub.accepted)  # no retry before 60 s
        assert t.act("flush") == "postqueue -f"
        assert sink.wait_for(set(sub.accepted), timeout=20) == set()
    finally:
        t.stop()
    assert instance_processes(t.conf_dir) == []


def test_bad_spec_and_actions_are_clear_errors():
    """Backoffs out of order and an unknown action are refused in one line."""
    with pytest.raises(ValueError, match="maximal_backoff_s"):
        PostfixSpec(minimal_backoff_s=10, maximal_backoff_s=5)
    with pytest.raises(UserError, match="unknown action 'pause'"):
        PostfixTarget(PostfixSpec()).act("pause")


def test_ctrl_c_of_the_runner_leaves_no_postfix(tmp_path, sink):
    """A runner interrupted with Ctrl-C (SIGINT) after starting the instance leaves no process of it."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mailstorm.harness.targets.base import TargetContext
        from mailstorm.harness.targets.postfix import PostfixSpec, PostfixTarget
        t = PostfixTarget(PostfixSpec())
        t.start(TargetContext(run_dir=Path({str(tmp_path)!r}), ledger_dir=Path({str(tmp_path)!r}),
                              seed=0, esp_smtp=({sink.host!r}, {sink.port})))
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    runner = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert runner.stdout.readline().strip() == "ready"
        conf = tmp_path / "postfix" / "conf"
        assert instance_processes(conf), "the instance did not run"
        runner.send_signal(signal.SIGINT)
        runner.wait(30)
    finally:
        runner.kill()
        runner.wait()
        runner.stdout.close()
    assert instance_processes(conf) == []
