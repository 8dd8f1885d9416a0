"""docs/ci.md's CI jobs are right as written: their YAML parses, they run ``mailstorm run smoke``, keep
report.html and junit.xml and fail on a non-zero exit; and the GitHub Actions job's shell steps, run
exactly as written (bash -e, as a GitHub runner runs a ``run:`` step) in a fresh copy of the checkout with
a clean virtual environment, install mailstorm, pass the smoke scenario and write the step summary."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ci.md"


def blocks() -> dict[str, dict]:
    """The doc's YAML blocks, by the heading they sit under."""
    out, heading = {}, None
    for m in re.finditer(r"^## ([^\n]+)$|^```yaml\n(.*?)^```$", DOC.read_text(), re.M | re.S):
        if m.group(1):
            heading = m.group(1).strip()
        else:
            out[heading] = yaml.safe_load(m.group(2))
    return out


def github_run_steps() -> list[str]:
    (job,) = blocks()["GitHub Actions"]["jobs"].values()
    return [step["run"] for step in job["steps"] if "run" in step]


def test_the_github_job_installs_runs_smoke_and_keeps_the_reports():
    doc = blocks()["GitHub Actions"]
    assert (
        doc[True]["push"] == {"branches": ["main"]} and "pull_request" in doc[True]
    )  # YAML 1.1: on: is True
    (job,) = doc["jobs"].values()
    runs = github_run_steps()
    assert any("pip install ." in r for r in runs)
    (smoke,) = [r for r in runs if "mailstorm run" in r]
    assert smoke.split()[:3] == [".venv/bin/mailstorm", "run", "smoke"]
    assert '--summary-file "$GITHUB_STEP_SUMMARY"' in smoke
    (upload,) = [s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    assert upload["if"] == "always()"
    assert upload["with"]["path"].split() == ["runs/*/report.html", "runs/*/junit.xml"]


def test_the_gitlab_job_runs_the_same_commands_and_reports_junit():
    (job,) = blocks()["GitLab CI"].values()
    runs = " ".join(github_run_steps()).replace('--summary-file "$GITHUB_STEP_SUMMARY"', "").split()
    assert " ".join(job["script"]).split() == runs  # the same install and run, without GitHub's summary
    assert job["artifacts"]["when"] == "always"
    assert job["artifacts"]["reports"]["junit"] == "runs/*/junit.xml"
    assert {"runs/*/report.html", "runs/*/junit.xml"} <= set(job["artifacts"]["paths"])


def _checkout_copy(dest: Path) -> None:
    """The checkout as actions/checkout gives it: the tracked files and the new ones not ignored."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


@pytest.mark.long
@pytest.mark.timeout(900)
def test_the_github_jobs_shell_steps_pass_as_written(tmp_path):
    """Each ``run:`` step of the GitHub job, verbatim, with ``python`` on the PATH as actions/setup-python
    puts it there (no virtual environment active), in a copy of the checkout."""
    checkout = tmp_path / "checkout"
    _checkout_copy(checkout)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    summary = tmp_path / "step-summary.md"
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", GITHUB_STEP_SUMMARY=str(summary), CI="true")
    for script in github_run_steps():
        done = subprocess.run(
            ["bash", "-e", "-c", script], cwd=checkout, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # What the upload step's globs find, and what the summary page shows.
    assert len(list(checkout.glob("runs/*/report.html"))) == 1
    assert len(list(checkout.glob("runs/*/junit.xml"))) == 1
    (report_md,) = checkout.glob("runs/*/report.md")
    assert summary.read_text() == report_md.read_text()
    assert "✅ PASS — smoke" in summary.read_text()
    # The venv the job made is its own: mailstorm came from the copy, not from this checkout.
    where = subprocess.run(
        [
            str(checkout / ".venv/bin/python"),
            "-c",
            "import mailstorm.harness; print(mailstorm.harness.__file__)",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,  # not a checkout: python -c puts its working directory first on sys.path
        check=True,
    ).stdout
    assert str(checkout / ".venv") in where
