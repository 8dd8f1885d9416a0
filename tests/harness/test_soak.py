"""A soak through the reference pipeline: every process's memory stays flat and partial reports appear
on time (marked long: 30 minutes at 500 msg/s by default).

    pytest -m long tests/harness/test_soak.py -s                  # the full soak, prints its figures
    MAILSTORM_SOAK_S=120 MAILSTORM_SOAK_RATE=100 pytest -m long tests/harness/test_soak.py -s   # a short one

Each process of the run (the runner, the fake ESP, the reference pipeline, the Locust processes) has its
RSS sampled ``SAMPLES`` times over the load (each minute on the full soak); the slope of a least-squares
line through the samples of the second half (after warm-up: pools, caches and buffers filled) must be
under ``MAX_SLOPE_MB_PER_MIN``. That needs a soak past its warm-up: the runner's live view forgets
settled messages only after ``FORGET_AFTER_S`` (10 minutes), so a soak shorter than twice that prints
its figures and checks only the partial reports (a check of the test itself, not of flatness); the
fake ESP keeps its 1,000 latest messages (``keep_messages``, 10,000 by default: filled in 20 s at
500 msg/s, in 100 s at 100). Partial reports are rebuilt every sixth of the run: each sample reads
report.json, and the partial reports seen must move on and be at most two periods behind the run.
"""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest

from mailstorm.harness.progress import FORGET_AFTER_S
from tests.harness.sut_support import processes_of, start_run, wait_for_load

SAMPLES = 30
MAX_SLOPE_MB_PER_MIN = 0.5  # 30 MB an hour: at 500 msg/s, under 1 byte per message
DURATION_S = float(os.environ.get("MAILSTORM_SOAK_S", 1800))
RATE = int(os.environ.get("MAILSTORM_SOAK_RATE", 500))
# After the load: the drain (60 s at most), Locust's stop, then every report of up to 900,000 messages.
END_S = 600


def _role(proc: psutil.Process) -> str | None:
    cmd = " ".join(proc.cmdline())
    for needle, role in (
        ("mailstorm.fake_esp", "fake ESP"),
        ("mailstorm.harness.reference", "reference pipeline"),
        ("locust", "locust"),
        ("mailstorm.cli run", "runner"),
    ):
        if needle in cmd:
            return role
    return None


def _slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    half = samples[len(samples) // 2 :]
    n = len(half)
    mt = sum(t for t, _ in half) / n
    mr = sum(r for _, r in half) / n
    var = sum((t - mt) ** 2 for t, _ in half)
    return 0.0 if var == 0 else sum((t - mt) * (r - mr) for t, r in half) / var * 60


@pytest.mark.long
@pytest.mark.timeout(90 + DURATION_S + END_S + 120)  # the start (wait_for_load), the load, the end
def test_a_soak_keeps_every_process_flat_and_reports_as_it_goes(tmp_path):
    duration, rate = DURATION_S, RATE
    every = duration / 6
    scenario = tmp_path / "soak.yaml"
    scenario.write_text(
        f"name: soak\nseed: 19\nduration: {duration:g}s\ndrain_deadline: 60s\ntarget: {{kind: reference}}\n"
        f"load:\n  shape: {{kind: steady, rate: {rate}}}\nreports: {{every: {every:g}s}}\n"
        "esp: {keep_messages: 1000}\n"
        "slo: {max_lost: 0}\n"
    )
    out, err = tmp_path / "runs", tmp_path / "stderr.txt"
    run = start_run(scenario, out, err)
    rss: dict[tuple[str, int], list[tuple[float, float]]] = {}
    partial_at: list[tuple[float, float]] = []  # (seconds into the load, the partial report's at_s)
    try:
        run_dir = wait_for_load(run, out, err)
        t0 = time.monotonic()
        for i in range(SAMPLES):
            # Sampling at a fixed pace, not waiting for anything to be ready.
            time.sleep(max(0.0, t0 + (i + 1) * duration / SAMPLES - time.monotonic()))
            assert run.poll() is None, err.read_text()[-3000:]
            now = time.monotonic() - t0
            for proc in [psutil.Process(run.pid), *processes_of(run_dir)]:
                role = _role(proc)
                if role is not None:
                    try:
                        rss.setdefault((role, proc.pid), []).append((now, proc.memory_info().rss / 2**20))
                    except psutil.Error:
                        continue
            try:
                report = json.loads((run_dir / "report.json").read_bytes())
            except (FileNotFoundError, ValueError):
                continue
            if "partial" in report:
                partial_at.append((now, report["partial"]["at_s"]))
        code = run.wait(END_S)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    figures = {
        f"{role} (pid {pid})": {
            "samples": len(s),
            "first_mb": round(s[0][1], 1),
            "last_mb": round(s[-1][1], 1),
            "slope_mb_per_min": round(_slope_mb_per_min(s), 3),
        }
        for (role, pid), s in sorted(rss.items())
        if len(s) >= SAMPLES // 2
    }
    final = json.loads((run_dir / "report.json").read_bytes())
    seen = {"duration_s": duration, "rate": rate, "rss": figures, "partials": partial_at}
    seen.update(outcomes=final["outcomes"], verdict=final.get("verdict"), exit_code=code)
    print(json.dumps(seen, indent=1))  # the soak's figures, printed before any check of them
    assert code == 0, err.read_text()[-3000:]
    assert {k.split(" (")[0] for k in figures} >= {"runner", "fake ESP", "reference pipeline", "locust"}
    if duration >= 2 * FORGET_AFTER_S:
        for name, f in figures.items():
            assert f["slope_mb_per_min"] < MAX_SLOPE_MB_PER_MIN, (name, f)
    # Partial reports on time: seen, moving on, never more than two periods (plus a rebuild) behind.
    assert len({at for _, at in partial_at}) >= 3, partial_at
    late = [(now, at) for now, at in partial_at if now - at > 2 * every + 30]
    assert not late, (late, every)
    assert "partial" not in final
