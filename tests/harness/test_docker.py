"""The docker target against a real dockerd: the reference pipeline in a container (image built from
local files by docker/build_pyhost_image.py) paused, restarted, killed and cut off its network mid-load
with every accepted message delivered; an adopted container restored; nothing left after stop()/Ctrl-C."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from mailstorm import replies
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.snapshots import snapshot_dir
from mailstorm.harness.targets.base import TARGETS, Actionable, Alive, TargetContext
from mailstorm.harness.targets.docker import LABEL, DockerSpec, DockerTarget, docker_client, smtp_greets
from mailstorm.reports.analysis import analyze
from mailstorm.reports.spec import SloSpec
from tests.harness.backup_support import stepped_run
from tests.harness.sut_support import Sink, Submitter

REFUSE = {"type": "reply", "phase": "eod", "reply": str(replies.TEMP_FAILURE)}

REPO = Path(__file__).resolve().parents[2]
PREFIX = str(Path(sys.base_prefix).resolve())
ENV = str(Path(sys.prefix).resolve())  # a venv (the same as PREFIX without one)
PYTHON = sys.executable  # not resolved: a venv interpreter finds its site-packages through its own path


def _client_or_reason():
    try:
        return docker_client(), ""
    except UserError as exc:
        return None, str(exc)


CLIENT, WHY = _client_or_reason()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(CLIENT is None, reason=f"no dockerd: {WHY}")]


@pytest.fixture(scope="module")
def image() -> str:
    out = subprocess.run(
        [sys.executable, str(REPO / "docker" / "build_pyhost_image.py")],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    return out.stdout.strip()


def reference_spec(image: str, queue: str = "{run_dir}/docker-queue.sqlite", **extra) -> DockerSpec:
    command = [
        PYTHON, "-m", "mailstorm.harness.reference",
        "--listen", "0.0.0.0:{port}", "--allow-remote", "--relay-networks", "0.0.0.0/0",
        "--queue", queue,
        "--relay", "smtp://{esp_host}:{esp_port}",
        "--ledger", "{ledger_dir}",
        "--backoff-base", "0.1", "--backoff-max", "0.5", "--grace", "2",
    ]  # fmt: skip
    return DockerSpec(
        image=image,
        command=command,
        port=2525,
        volumes={
            "{python_prefix}": "{python_prefix}:ro",
            "{python_env}": "{python_env}:ro",
            "{mailstorm_root}": "{mailstorm_root}:ro",
            "{run_dir}": "{run_dir}",
        },
        working_dir=str(REPO),
        **extra,
    )


def ours(run_dir: Path) -> list:
    return CLIENT.containers.list(all=True, filters={"label": f"{LABEL}={run_dir.resolve()}"})


@pytest.fixture
def sink():
    s = Sink().up()
    yield s
    s.down()


@pytest.fixture
def ctx(tmp_path, sink):
    return TargetContext(
        run_dir=tmp_path, ledger_dir=tmp_path / "ledger", seed=3, esp_smtp=(sink.host, sink.port)
    )


@pytest.fixture
def target(image, ctx):
    t = DockerTarget(reference_spec(image))
    yield t
    t.stop()
    assert ours(ctx.run_dir) == []


def test_registered_with_its_abilities():
    """docker is a registered kind that can act and say whether its container is alive."""
    t = TARGETS["docker"](DockerSpec(image="x"))
    assert isinstance(t, Actionable) and isinstance(t, Alive)
    assert {"kill", "pause", "unpause", "restart", "stop", "disconnect", "connect"} <= t.actions()


def test_pause_and_restart_mid_load_deliver_every_accepted_message(target, ctx, sink):
    """The reference pipeline in a container: paused 3 s and restarted mid-load; submissions during the
    pause wait, those during the restart may fail, and every accepted message reaches the ESP."""
    [ep] = target.start(ctx)
    assert ep.host == "127.0.0.1" and smtp_greets(ep.host, ep.port)
    sub = Submitter(ep.host, ep.port, count=60, interval=0.1, prefix="d", timeout=20).start()
    while len(sub.accepted) < 10:
        time.sleep(0.05)
    assert target.act("pause").startswith("paused")
    assert target.alive()
    paused_at = time.monotonic()
    while time.monotonic() - paused_at < 3:
        time.sleep(0.1)  # the stall is the behaviour under test
    assert target.act("unpause").startswith("unpaused")
    while len(sub.accepted) < 40:
        time.sleep(0.05)
    assert target.act("restart").startswith("restarted")
    sub.join(120)
    assert len(sub.accepted) + len(sub.failed) == 60
    assert len(sub.accepted) >= 40
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()
    assert (ctx.run_dir / "docker-queue.sqlite").exists()  # the queue lives on the host, across restarts


def test_kill_then_start_keeps_the_queue(target, ctx, sink):
    """kill (SIGKILL) with the ESP down, then start: the messages queued before the kill are delivered."""
    [ep] = target.start(ctx)
    sink.down()
    sub = Submitter(ep.host, ep.port, count=10, interval=0.0, prefix="q").start()
    sub.join(60)
    assert len(sub.accepted) == 10
    assert target.act("kill").startswith("killed")
    assert not target.alive()
    sink.up()
    assert target.act("start").startswith("started")
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()


def test_network_disconnect_and_connect(target, ctx, sink):
    """disconnect cuts the container off (submissions fail), connect brings it back (they succeed)."""
    [ep] = target.start(ctx)
    assert "disconnected" in target.act("disconnect")
    assert not smtp_greets(ep.host, ep.port)
    assert "connected" in target.act("connect")
    deadline = time.monotonic() + 20
    while not smtp_greets(ep.host, ep.port):
        assert time.monotonic() < deadline, "not reachable after connect"
        time.sleep(0.1)
    sub = Submitter(ep.host, ep.port, count=3, interval=0.0, prefix="n").start()
    sub.join(60)
    assert len(sub.accepted) == 3
    assert sink.wait_for(set(sub.accepted), timeout=30) == set()


def test_adopted_container_is_restored_not_removed(image, tmp_path, sink):
    """A container named in the spec is used as it is; stop() unpauses it and leaves it running."""
    run_dir = tmp_path / "adopt"
    run_dir.mkdir()
    values = {
        "{run_dir}": str(run_dir),
        "{ledger_dir}": str(run_dir / "ledger"),
        "{port}": "25",
        "{esp_host}": sink.host,
        "{esp_port}": str(sink.port),
    }
    # On the host's network the container must stay on loopback: no listener on the machine's other
    # addresses, and no relaying for anyone but loopback peers.
    values |= {"0.0.0.0:": "127.0.0.1:", "0.0.0.0/0": "127.0.0.0/8"}
    command = []
    for part in reference_spec(image).command:  # the same pipeline, started by the user, not by mailstorm
        for key, value in values.items():
            part = part.replace(key, value)
        command.append(part)
    name = f"mailstorm-adopt-{os.getpid()}"
    user_container = CLIENT.containers.run(
        image, command, detach=True, name=name, network_mode="host", working_dir=str(REPO),
        volumes={
            **{d: {"bind": d, "mode": "ro"} for d in (PREFIX, ENV, str(REPO))},
            str(run_dir): {"bind": str(run_dir), "mode": "rw"},
        },
    )  # fmt: skip
    try:
        t = DockerTarget(DockerSpec(container=name, network="host", port=25))
        [ep] = t.start(
            TargetContext(run_dir=run_dir, ledger_dir=run_dir, seed=0, esp_smtp=(sink.host, sink.port))
        )
        assert ep.port == 25
        t.act("pause")
        t.stop()
        user_container.reload()
        assert user_container.status == "running"
    finally:
        user_container.remove(force=True)


def test_bad_specs_are_one_line_errors(ctx):
    """Both or neither of container/image, or an image that does not exist, are refused clearly."""
    with pytest.raises(ValueError, match="exactly one of container"):
        DockerSpec(image="a", container="b")
    with pytest.raises(UserError, match="cannot run image 'mailstorm-no-such-image:0'"):
        DockerTarget(DockerSpec(image="mailstorm-no-such-image:0")).start(ctx)
    with pytest.raises(UserError, match="no container named"):
        DockerTarget(DockerSpec(container="mailstorm-no-such-container")).start(ctx)


def test_ctrl_c_of_the_runner_leaves_no_container(image, tmp_path, sink):
    """A runner interrupted with Ctrl-C after starting the container leaves no container behind."""
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from mailstorm.harness.targets.base import TargetContext
        from mailstorm.harness.targets.docker import DockerTarget
        from tests.harness.test_docker import reference_spec
        t = DockerTarget(reference_spec({image!r}))
        run = Path({str(tmp_path)!r})
        esp = ({sink.host!r}, {sink.port})
        t.start(TargetContext(run_dir=run, ledger_dir=run / "ledger", seed=0, esp_smtp=esp))
        print("ready", flush=True)
        time.sleep(120)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO
    ) as runner:
        try:
            assert runner.stdout.readline().strip() == "ready"
            assert len(ours(tmp_path)) == 1
            runner.send_signal(signal.SIGINT)
            runner.wait(60)
        finally:
            runner.kill()
    assert ours(tmp_path) == []


def test_restore_loses_exactly_what_came_after_the_snapshot(image, tmp_path):
    """Backups of a container's state (state_path on the bind-mounted run directory): the reference
    pipeline's SQLite queue copied out of the running container (paused for the copy), wiped after a
    SIGKILL, restored, started. A delivered before the snapshot; B queued at it (the ESP refusing), then
    delivered; C accepted after it and queued at the wipe: the ESP gets B twice and C never, and the
    reports name exactly those ids (RPO, duplicates caused by the restore)."""
    spec = reference_spec(image, queue="{run_dir}/state/queue.sqlite", state_path="{run_dir}/state")
    assert {"snapshot", "restore", "wipe"} <= DockerTarget(spec).actions()
    assert "snapshot" not in DockerTarget(reference_spec(image)).actions()
    with stepped_run(tmp_path, DockerTarget(spec)) as (run, esp, target, port):
        a, b, c = ([f"{g}-{n}" for n in range(k)] for g, k in (("a", 4), ("b", 5), ("c", 6)))
        run.submit(port, a)
        run.wait_esp(Counter(a), 30, "A delivered")
        fault = esp.control.add_fault(REFUSE)
        run.submit(port, b)
        detail = run.act(target, "docker", "snapshot", name="nightly")
        assert "paused for the copy" in detail and target.alive()
        with tarfile.open(snapshot_dir(run.run_dir, "nightly") / "state.tar") as tar:
            assert "state/queue.sqlite" in tar.getnames()
        esp.control.remove_fault(fault)
        run.wait_esp(Counter(b), 30, "B delivered")
        fault = esp.control.add_fault(REFUSE)
        run.submit(port, c)
        run.act(target, "docker", "kill")
        run.act(target, "docker", "wipe")
        assert list((run.run_dir / "state").iterdir()) == []
        with pytest.raises(UserError, match="no snapshot named 'never'"):
            target.act("restore", name="never")
        run.act(target, "docker", "restore", name="nightly")
        assert (run.run_dir / "state" / "queue.sqlite").exists()
        run.act(target, "docker", "start")
        esp.control.remove_fault(fault)
        run.wait_esp(Counter({i: 2 for i in b}), 30, "B delivered again after the restore")
    (restore,) = analyze(run.run_dir, slo=SloSpec(max_lost=6)).figures["restores"]
    assert restore["ok"], restore["detail"]
    assert restore["rpo_ids"] == c and restore["rpo_messages"] == 6
    assert restore["duplicates"] == 5


def test_wipe_of_state_in_the_writable_layer(image, ctx):
    """State outside every mount: wiped inside the running container (through /proc/PID/root: the image
    has no rm); once it is stopped, the wipe says why it cannot, in one line."""
    t = DockerTarget(reference_spec(image, state_path="/tmp/state"))
    try:
        t.start(ctx)
        c = t._container
        tree = io.BytesIO()
        with tarfile.open(fileobj=tree, mode="w") as tar:
            for name in ("state/sub/f", "state/g"):
                tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
        assert c.put_archive("/tmp", tree.getvalue())
        assert t.act("wipe") == "wiped /tmp/state (2 entries, inside the running container)"
        stream, _ = c.get_archive("/tmp/state")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            assert tar.getnames() == ["state"]
        t.act("kill")
        with pytest.raises(HarnessError, match="container is stopped and the path is in its own writable"):
            t.act("wipe")
    finally:
        t.stop()
