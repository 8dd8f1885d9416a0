"""Nothing outlives the runner: `mailstorm run` SIGKILLed mid-run leaves no process of its run within 10 s
(its children get SIGTERM from the kernel, the watchdog ends the rest, also a SUT restarted from the
timeline's thread), and `mailstorm cleanup` finds and ends what a run left when its watchdog was killed
too, or a fake ESP a test pointed at a run directory, and leaves live runs alone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from mailstorm.deathsig import die_with_parent
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.leftovers import show
from mailstorm.ledger import Kind, LedgerReader
from tests.harness.sut_support import cleanup, gone_within, processes_of, start_run, wait_for_load

RESTARTED = """name: killed
seed: 8
duration: 40s
drain_deadline: 10s
load:
  shape: {kind: steady, rate: 20}
chaos:
  - {at: 1s, name: restart, target: restart}
"""


def start_and_restart(tmp_path: Path, out: Path) -> tuple[subprocess.Popen[bytes], Path, psutil.Process]:
    """`mailstorm run` of RESTARTED, once the timeline has restarted the reference pipeline (from its own
    thread: no PDEATHSIG); the runner, its run directory and the restarted pipeline."""
    path, err = tmp_path / "killed.yaml", tmp_path / "stderr.txt"
    path.write_text(RESTARTED)
    run = start_run(path, out, err)
    try:
        run_dir = wait_for_load(run, out, err)
        deadline = time.monotonic() + 30
        reader = LedgerReader(run_dir / "ledger")
        while not any(r["what"] == "restart" and r["ok"] for r in reader.records([Kind.ACTION])):
            assert run.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the timeline did not restart the pipeline"
            time.sleep(0.1)  # polling the timeline ledger for the action's outcome
        (sut,) = [p for p in processes_of(run_dir) if "mailstorm.harness.reference" in p.cmdline()]
    except BaseException:
        run.kill()
        run.wait()
        raise
    return run, run_dir, sut


def watchdog_of(run_dir: Path) -> psutil.Process:
    (dog,) = [p for p in processes_of(run_dir) if "mailstorm.harness.watchdog" in p.cmdline()]
    return dog


def test_a_sigkilled_runner_leaves_no_process_of_its_run_within_10_s(tmp_path):
    """SIGKILL to the runner mid-load, after the timeline restarted the pipeline: within 10 s no process
    names the run (fake ESP, pipeline, Locust, watchdog), the watchdog logged what it ended, and
    `mailstorm cleanup` has nothing left to do."""
    out = tmp_path / "runs"
    run, run_dir, sut = start_and_restart(tmp_path, out)
    try:
        parts = processes_of(run_dir)
        assert len(parts) >= 4, parts  # watchdog, fake ESP, pipeline, Locust
        run.kill()
        run.wait()
        killed = time.monotonic()
        left = gone_within(out, 10)
        assert left == [], f"still running 10 s after SIGKILL: {[p.cmdline()[:4] for p in left]}"
        took = time.monotonic() - killed
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert not sut.is_running()
    log = (run_dir / "logs" / "watchdog.log").read_text()
    assert f"ended process {sut.pid} of " in log and "the runner died" in log, log
    done = cleanup(out)
    assert done.returncode == 0 and done.stdout == "nothing to clean up\n", done.stdout + done.stderr
    print(f"\nrunner SIGKILLed: every process of the run gone in {took:.1f} s")


def test_cleanup_ends_what_a_run_left_when_its_watchdog_was_killed_too(tmp_path):
    """A live run is skipped by `mailstorm cleanup`. Its watchdog then its runner SIGKILLed: the pipeline
    the timeline restarted (no PDEATHSIG) is left running; `mailstorm cleanup` ends it, printing it, and
    a second cleanup finds nothing."""
    out = tmp_path / "runs"
    run, run_dir, sut = start_and_restart(tmp_path, out)
    try:
        live = cleanup(out)
        assert live.returncode == 0, live.stderr
        skipped, nothing = live.stdout.splitlines()
        assert skipped == f"skipped {show(run_dir)}: its runner is still running"
        assert nothing == "nothing to clean up"
        assert sut.is_running()
        watchdog_of(run_dir).kill()
        run.kill()
        run.wait()
        # The kernel's SIGTERM ends the runner's own children; the restarted pipeline stays.
        deadline = time.monotonic() + 10
        while (left := processes_of(run_dir)) != [sut] and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the process table
        assert left == [sut], f"only the restarted pipeline should be left: {left}"
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    done = cleanup(out)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(f"ended process {sut.pid} of ") and "mailstorm.harness.reference" in line, line
    assert processes_of(out) == []
    assert cleanup(out).stdout == "nothing to clean up\n"


def test_cleanup_finds_a_fake_esp_by_the_run_directory_it_writes_to(tmp_path):
    """A fake ESP started with its ledger in a run directory under --out (no runner, no mark in its
    environment) is found by its command line, ended and printed."""
    out = tmp_path / "runs"
    esp = EspProcess(out / "20260101-000000-left" / "ledger").start()
    try:
        done = cleanup(out)
        assert done.returncode == 0, done.stderr
        (line,) = done.stdout.splitlines()
        assert line.startswith(f"ended process {esp.pid} of ") and "mailstorm.fake_esp" in line, line
        assert not esp.alive()
        assert cleanup(tmp_path / "elsewhere").stdout == "nothing to clean up\n"
    finally:
        esp.kill()


CHILD_OF_A_KILLED_PARENT = """
import subprocess, sys, threading
from mailstorm.deathsig import die_with_parent
main = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **die_with_parent())
box = []
def spawn():
    box.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], **die_with_parent()))
t = threading.Thread(target=spawn)
t.start()
t.join()
print(main.pid, box[0].pid, flush=True)
import time; time.sleep(60)
"""


def test_children_get_sigterm_when_their_parent_is_killed():
    """A child started with die_with_parent() from the main thread ends when its parent is SIGKILLed;
    from another thread nothing is set (that thread's end would otherwise kill it mid-run)."""
    assert die_with_parent() and not _in_thread(die_with_parent)
    children: list[psutil.Process] = []
    with subprocess.Popen([sys.executable, "-c", CHILD_OF_A_KILLED_PARENT], stdout=subprocess.PIPE) as parent:
        try:
            main_pid, thread_pid = map(int, parent.stdout.readline().split())
            children = [psutil.Process(main_pid), psutil.Process(thread_pid)]
            parent.kill()
            parent.wait()
            gone, alive = psutil.wait_procs(children, timeout=5)
            assert [p.pid for p in gone] == [main_pid] and [p.pid for p in alive] == [thread_pid]
        finally:
            parent.kill()
            for child in children:
                if child.is_running():
                    child.kill()


def _in_thread(fn):
    box: list = []
    t = threading.Thread(target=lambda: box.append(fn()))
    t.start()
    t.join()
    return box[0]
