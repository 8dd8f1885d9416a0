"""Broken scenario files: each gets one line naming file, line and field, exit code 2, no traceback.

Every file in broken_scenarios/ starts with ``# expect: LINE WHAT``: the line the error must point at
and the field (or ``YAML`` / ``empty`` / ``file``) it must name. The CLI runs as a subprocess, as a
user would run it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

BROKEN = Path(__file__).with_name("broken_scenarios")
FILES = sorted(BROKEN.glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[2]


def mailstorm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def expectation(path: Path) -> tuple[int, str]:
    m = re.match(r"# expect: (\d+) (\S+)", path.read_text().splitlines()[0])
    assert m, f"{path.name} lacks its '# expect: LINE WHAT' header"
    return int(m.group(1)), m.group(2)


def test_there_are_at_least_twenty_broken_files():
    """The collection covers at least 20 distinct ways to get a scenario wrong."""
    assert len(FILES) >= 20


@pytest.fixture(scope="module")
def validated() -> dict[Path, subprocess.CompletedProcess[str]]:
    """`mailstorm validate` on every broken file, four processes at a time (each is a fresh CLI)."""
    with ThreadPoolExecutor(4) as pool:
        return dict(zip(FILES, pool.map(lambda p: mailstorm("validate", str(p)), FILES), strict=True))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_validate_names_field_and_line(path, validated):
    """`mailstorm validate BROKEN` exits 2 with one line: path:line: field: why (no traceback)."""
    line, what = expectation(path)
    proc = validated[path]
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"{path}:{line}: " in lines[0], lines[0]
    assert what in lines[0], lines[0]


@pytest.mark.parametrize(
    "name", ["timeline-past-end", "unknown-target-action", "bad-yaml-indent", "restore-unknown-snapshot"]
)
def test_run_refuses_before_starting_anything(name, tmp_path):
    """`mailstorm run BROKEN` fails the same way, before it makes a run directory."""
    path = BROKEN / f"{name}.yaml"
    line, what = expectation(path)
    proc = mailstorm("run", str(path), "--out", str(tmp_path / "runs"))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and f"{path}:{line}: " in proc.stderr and what in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_bad_command_line_values_exit_2(tmp_path):
    """Bad --duration / --seed / --out values and a missing file are one-line errors with exit 2."""
    smoke = str(ROOT / "scenarios" / "library" / "smoke.yaml")
    for args in (
        ["run", smoke, "--duration", "soon"],
        ["run", smoke, "--seed", "-1"],
        ["run", str(tmp_path / "nope.yaml")],
        ["validate", "no-such-library-scenario"],
        ["run", smoke, "--out", "/proc/no-runs-here"],
    ):
        proc = mailstorm(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1, (args, proc.stderr)


def test_remote_addresses_need_the_file_and_the_flag(tmp_path):
    """A non-loopback address is allowed only when the file says allow_remote: true AND --allow-remote is
    given; either alone is a one-line error naming the field and line."""
    body = "name: remote\nduration: 10s\nload: {shape: {kind: steady, rate: 5}}\n"
    body += "probes:\n  - url: http://192.0.2.10:9100/health\n"
    without = tmp_path / "without.yaml"
    without.write_text(body)
    with_file = tmp_path / "with.yaml"
    with_file.write_text(body + "allow_remote: true\n")
    for path, flag in ((without, True), (with_file, False)):
        proc = mailstorm("validate", str(path), *(["--allow-remote"] if flag else []))
        assert proc.returncode == 2 and f"{path}:5: probes[0].url: " in proc.stderr, proc.stderr
    proc = mailstorm("validate", str(with_file), "--allow-remote")
    assert proc.returncode == 0, proc.stderr
