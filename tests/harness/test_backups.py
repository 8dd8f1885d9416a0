"""Restores from backup against known truth: a real reference pipeline (SQLite's online backup API) and
a real fake ESP, driven step by step so which messages the snapshot holds is known by construction; the
reports' RPO and duplicate counts must name exactly those messages, id by id."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml

import mailstorm.reports
from mailstorm import replies
from mailstorm.errors import HarnessError, UserError
from mailstorm.harness.reference.store import queued_ids
from mailstorm.harness.snapshots import check_snapshots, snapshot_dir
from mailstorm.harness.targets.base import TargetContext
from mailstorm.harness.targets.postfix import PostfixSpec, PostfixTarget, postfix_installed
from mailstorm.harness.targets.process import ProcessSpec, ProcessTarget
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.reports.analysis import analyze
from mailstorm.reports.spec import SloSpec
from tests.harness.backup_support import SteppedRun, stepped_run
from tests.harness.sut_support import ROOT, Sink, chaos_window, run_cli

REFUSE = {"type": "reply", "phase": "eod", "reply": str(replies.TEMP_FAILURE)}

REPORT_SCHEMA = Path(mailstorm.reports.__file__).parent / "schema" / "report.schema.json"


@pytest.fixture
def stepped(tmp_path):
    spec = ReferenceTargetSpec(backoff_base_s=0.05, backoff_max_s=0.2, queue_interval_s=0.2)
    with stepped_run(tmp_path, ReferenceTarget(spec)) as parts:
        yield parts
    assert not any(parts[2].pids)


def test_reference_restore_loses_exactly_what_came_after_the_snapshot(stepped):
    """A delivered before the snapshot; B queued (the ESP refusing) when it is taken, then delivered;
    C accepted after it, still queued at the wipe. Restoring the snapshot brings B back, so the ESP gets
    B twice (duplicates caused by the restore) and C never (the RPO): exactly those ids."""
    run, esp, target, port = stepped
    a, b, c = ([f"{g}-{n}" for n in range(k)] for g, k in (("a", 5), ("b", 6), ("c", 7)))
    run.submit(port, a)
    run.wait_esp(Counter(a), 20, "A delivered")
    fault = esp.control.add_fault(REFUSE)
    run.submit(port, b)
    run.act(target, "reference", "snapshot", name="nightly")
    # The truth, from the copy itself: it holds B, nothing else.
    copy = snapshot_dir(run.run_dir, "nightly") / "queue-0.sqlite"
    assert sorted(corr for _, corr in queued_ids(copy)) == sorted(b)
    esp.control.remove_fault(fault)
    run.wait_esp(Counter(b), 20, "B delivered")
    fault = esp.control.add_fault(REFUSE)
    run.submit(port, c)
    with pytest.raises(HarnessError, match="stop or kill it first"):
        target.act("wipe")
    run.act(target, "reference", "kill")
    run.act(target, "reference", "wipe")
    assert not (run.run_dir / "reference" / "queue-0.sqlite").exists()
    run.act(target, "reference", "restore", name="nightly")
    run.act(target, "reference", "start")
    esp.control.remove_fault(fault)
    run.wait_esp(Counter({i: 2 for i in b}), 20, "B delivered again after the restore")
    assert target.queue_depth() == 0
    # The runner's end-of-drain listing: the queue is empty, the listing complete.
    assert run.list_queue(target, "reference") == 0
    target.stop()

    figures = analyze(run.run_dir, slo=SloSpec(max_lost=7, max_rpo_messages=7)).figures
    (restore,) = figures["restores"]
    assert restore["ok"] and restore["snapshot"] == "nightly"
    assert restore["rpo_messages"] == 7
    assert restore["rpo_ids"] == c  # in the order the SUT accepted them
    assert restore["duplicates"] == 6
    assert restore["rpo_s"] is not None and restore["snapshot_age_s"] > 0
    # Deferred before the wipe, and not in the SUT's queue when the runner listed it whole: lost, not
    # pending (mailstorm.reports.fate: a complete listing is the truth about what the SUT holds).
    assert figures["outcomes"]["lost"] == 7 and figures["outcomes"]["pending"] == 0
    assert figures["outcomes"]["duplicated"] == 6
    rpo = next(s for s in figures["slo"] if s["name"] == "max_rpo_messages")
    assert rpo["passed"] and rpo["actual"] == 7
    tight = analyze(run.run_dir, slo=SloSpec(max_lost=7, max_rpo_messages=6)).figures
    assert tight["verdict"] == "fail"


def test_restore_of_a_snapshot_never_taken_is_refused_by_the_target(stepped):
    run, _, target, _ = stepped
    run.act(target, "reference", "stop")
    with pytest.raises(UserError, match="no snapshot named 'never'"):
        target.act("restore", name="never")
    with pytest.raises(UserError, match="takes only 'instance' and 'name'"):
        target.act("snapshot", name="x", when="now")


def test_check_snapshots_follows_the_timeline_order():
    """A restore needs a snapshot of its name at an earlier time (or earlier in the file at the same
    time); steps are given in file order, with their times."""
    ok = [(1.0, 0, "snapshot", {"name": "n"}), (5.0, 1, "kill", {}), (6.0, 2, "restore", {"name": "n"})]
    assert check_snapshots(ok) is None
    assert check_snapshots([(1.0, 0, "snapshot", {}), (2.0, 1, "restore", {})]) is None  # both "default"
    late = [(6.0, 0, "snapshot", {"name": "n"}), (5.0, 1, "restore", {"name": "n"})]
    assert check_snapshots(late) == (
        1,
        "restore of snapshot 'n', which no earlier step takes (taken before it: none)",
    )
    other = [(1.0, 0, "snapshot", {"name": "a"}), (2.0, 1, "restore", {"name": "b"})]
    assert check_snapshots(other)[0] == 1
    bad = [(1.0, 0, "snapshot", {"name": "../x"})]
    assert check_snapshots(bad)[0] == 0


@pytest.fixture
def stepped_postfix(tmp_path):
    if postfix_installed() is None or os.geteuid() != 0:
        pytest.skip("needs Postfix installed and root (set-permissions, chown)")
    with stepped_run(tmp_path, PostfixTarget(PostfixSpec(queue_sample_s=0))) as parts:
        yield parts


@pytest.mark.postfix
def test_postfix_restore_loses_exactly_what_came_after_the_snapshot(stepped_postfix):
    """The same truth with Postfix: the snapshot (stop, copy the queue directories, start) holds B, which
    Postfix sends again after the restore (postsuper -s renames the copied queue files); C, accepted after
    the snapshot and queued at the wipe, is the RPO, id by id."""
    run, esp, target, port = stepped_postfix
    a, b, c = ([f"{g}-{n}" for n in range(k)] for g, k in (("a", 4), ("b", 5), ("c", 6)))
    run.submit(port, a)
    run.wait_esp(Counter(a), 30, "A delivered")
    fault = esp.control.add_fault(REFUSE)
    run.submit(port, b)
    wait_depth(target, 5)
    run.act(target, "postfix", "snapshot", name="nightly")
    assert target.alive(), "the snapshot starts Postfix again"
    copied = [p for p in (snapshot_dir(run.run_dir, "nightly")).rglob("*") if p.is_file()]
    assert len([p for p in copied if p.parent.name in ("incoming", "active") or "deferred" in p.parts]) == 5
    esp.control.remove_fault(fault)
    run.act(target, "postfix", "flush")
    run.wait_esp(Counter(b), 30, "B delivered")
    fault = esp.control.add_fault(REFUSE)
    run.submit(port, c)
    wait_depth(target, 6)
    run.act(target, "postfix", "kill")
    run.act(target, "postfix", "wipe")
    assert target.queue_depth() == 0
    run.act(target, "postfix", "restore", name="nightly")
    run.act(target, "postfix", "start")
    esp.control.remove_fault(fault)
    run.act(target, "postfix", "flush")
    run.wait_esp(Counter({i: 2 for i in b}), 30, "B delivered again after the restore")
    wait_depth(target, 0)
    target.stop()

    (restore,) = analyze(run.run_dir, slo=SloSpec(max_lost=6)).figures["restores"]
    assert restore["ok"], restore["detail"]
    assert restore["rpo_ids"] == c and restore["rpo_messages"] == 6
    assert restore["duplicates"] == 5


def wait_depth(target: PostfixTarget, depth: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while target.queue_depth() != depth:
        assert time.monotonic() < deadline, f"queue depth {target.queue_depth()}, waited for {depth}"
        time.sleep(0.1)  # polling interval of a real condition


def test_backup_restore_scenario_end_to_end(tmp_path):
    """The library scenario's timeline, shortened, through `mailstorm run`: the restore's RPO names
    messages the SUT accepted between the snapshot and the crash that never reached the ESP (about 2 s
    of a 20 msg/s load), the restore recovered (an RTO), and the backup SLOs are judged."""
    library = yaml.safe_load((ROOT / "scenarios" / "library" / "backup-restore.yaml").read_text())
    times = {"esp-down": (2, 6), "snapshot": (3, None), "crash": (5, None), "disk-lost": (5, None)}
    times |= {"restore": (6, None), "start": (6, None)}
    for step in library["chaos"]:
        at, for_ = times[step["name"]]
        step["at"] = f"{at}s"
        if for_ is not None:
            step["for"] = f"{for_}s"
    library |= {"duration": "14s", "drain_deadline": "20s"}
    library["slo"] |= {"max_rpo_messages": 60, "max_rto_s": 15}
    scenario = tmp_path / "backup.yaml"
    scenario.write_text(yaml.safe_dump(library))
    code, run_dir, stderr = run_cli(scenario, tmp_path / "runs")
    figures = json.loads((run_dir / "report.json").read_text())
    assert code == 0, stderr
    jsonschema.validate(figures, json.loads(REPORT_SCHEMA.read_text()))
    (restore,) = figures["restores"]
    assert restore["ok"] and restore["recovered"] and restore["rto_s"] is not None
    assert 20 <= restore["rpo_messages"] <= 60, restore
    snapshot, _ = chaos_window(run_dir, "snapshot")
    crash, _ = chaos_window(run_dir, "crash")
    reader = LedgerReader(run_dir / "ledger")
    took = {r["id"]: r["t"] for r in reader.records([Kind.SUT_ACCEPTED])}
    at_esp = {r["id"] for r in reader.records([Kind.ESP_ACCEPTED])}
    truth = sorted((t, i) for i, t in took.items() if snapshot < t <= crash and i not in at_esp)
    assert restore["rpo_ids"] == [i for _, i in truth]
    assert {s["name"] for s in figures["slo"]} >= {"max_rpo_messages", "max_rto_s"}
    assert "| Restore | Snapshot |" in (run_dir / "report.md").read_text()


def test_process_target_runs_the_users_backup_commands(tmp_path):
    """A process SUT (the reference pipeline as a command) with the user's own commands: a snapshot by
    SQLite's backup through {python}, a restore by cp, a wipe by rm; after kill, wipe, restore and start
    its queue holds exactly what the snapshot held, and a failing command fails the action."""
    sink = Sink().up()
    sink.rec.reply = str(replies.TEMP_FAILURE)  # nothing leaves the queue
    backup = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).backup(sqlite3.connect(sys.argv[2]))"
    queue = "{run_dir}/q.sqlite"
    spec = ProcessSpec(
        command=[
            "{python}", "-m", "mailstorm.harness.reference", "--listen", "{host}:{port}", "--queue", queue,
            "--relay", "smtp://{esp_host}:{esp_port}", "--ledger", "{ledger_dir}",
        ],
        cwd="{mailstorm_root}",
        snapshot_command=["{python}", "-c", backup, queue, "{snapshot_dir}/q-{name}.sqlite"],
        restore_command=["cp", "{snapshot_dir}/q-{name}.sqlite", queue],
        wipe_command=["rm", "-f", queue, f"{queue}-wal", f"{queue}-shm"],
    )  # fmt: skip
    target = ProcessTarget(spec)
    ctx = TargetContext(
        run_dir=tmp_path, ledger_dir=tmp_path / "ledger", seed=1, esp_smtp=(sink.host, sink.port)
    )
    run = SteppedRun(tmp_path / "steps")
    try:
        (endpoint,) = target.start(ctx)
        assert {"snapshot", "restore", "wipe"} <= target.actions()
        b, c = ["pb-0", "pb-1", "pb-2"], ["pc-0", "pc-1"]
        run.submit(endpoint.port, b)
        assert "exited 0" in target.act("snapshot", name="n1")
        assert (tmp_path / "snapshots" / "n1" / "q-n1.sqlite").is_file()
        run.submit(endpoint.port, c)
        target.act("kill")
        target.act("wipe")
        assert not (tmp_path / "q.sqlite").exists()
        target.act("restore", name="n1")
        assert sorted(corr for _, corr in queued_ids(tmp_path / "q.sqlite")) == b
        target.act("start")
        assert target.alive()
        with pytest.raises(UserError, match="no snapshot named 'n2'"):
            target.act("restore", name="n2")
    finally:
        target.stop()
        run.close()
        sink.down()
    broken = ProcessTarget(spec.model_copy(update={"snapshot_command": ("false",)}))
    try:
        broken.start(ctx)
        with pytest.raises(HarnessError, match="snapshot_command exited 1"):
            broken.act("snapshot")
    finally:
        broken.stop()
    without = ProcessTarget(ProcessSpec(command=["true"]))
    assert not {"snapshot", "restore", "wipe"} & without.actions()
