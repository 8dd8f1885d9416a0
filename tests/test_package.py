"""One import root: the wheel installs exactly one top-level name, ``mailstorm``, with the console script
and the pytest plugin; the ground (``mailstorm/*.py``) never imports the packages above it; nothing
imports the old top-level names; ``python -m mailstorm`` is the command."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("harness", "fake_esp", "scenarios", "reports")
OLD_ROOTS = frozenset(SUBPACKAGES)


def imported_names(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_wheel_has_one_top_level_name(tmp_path):
    """Built as pip builds it, the wheel holds mailstorm/ and its dist-info only, every module of the
    four folders under mailstorm/, their data files, the console script and the pytest11 entry point."""
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    out = subprocess.run([*pip, "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("mailstorm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if ".dist-info/" not in n}
    assert tops == {"mailstorm"}
    for pkg in SUBPACKAGES:
        for src in (ROOT / pkg).rglob("*.py"):
            assert f"mailstorm/{pkg}/{src.relative_to(ROOT / pkg).as_posix()}" in names, src
    assert "mailstorm/ledger/records.py" in names and "mailstorm/__main__.py" in names
    assert "mailstorm/fake_esp/esps/ses/profile.yaml" in names  # an ESP home's package data
    assert "mailstorm/scenarios/library/demo.yaml" in names
    assert any(n.startswith("mailstorm/reports/templates/") and n.endswith(".j2") for n in names)
    vendor = ("uPlot.iife.min.js", "uPlot.min.css", "uPlot.LICENSE")  # what report.html embeds
    assert {f"mailstorm/reports/templates/vendor/{v}" for v in vendor} <= set(names)
    assert "mailstorm/reports/templates/charts.js" in names
    assert "mailstorm/fake_esp/control_page.html" in names  # the control API's page at /
    (dist_info,) = {n.split("/", 1)[0] for n in names if ".dist-info/" in n}
    top_level = zipfile.ZipFile(wheel).read(f"{dist_info}/top_level.txt").decode().split()
    assert top_level == ["mailstorm"]
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "mailstorm = mailstorm.cli:main" in entry_points
    assert "mailstorm = mailstorm.fake_esp.pytest_plugin" in entry_points


def test_the_ground_imports_nothing_above_it():
    """mailstorm/*.py is what every part uses; it imports none of the packages on top (the dispatcher
    names their command modules as strings, loaded when the command line is parsed)."""
    above = {f"mailstorm.{p}" for p in SUBPACKAGES}
    for path in sorted((ROOT / "mailstorm").glob("*.py")):
        bad = {
            n for n in imported_names(path) if n in above or n.split(".")[:2] in [a.split(".") for a in above]
        }
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_nothing_imports_the_old_top_level_names():
    for folder in ("mailstorm", *SUBPACKAGES, "tests", "bench", "docker"):
        for path in (ROOT / folder).rglob("*.py"):
            bad = {n for n in imported_names(path) if n.split(".")[0] in OLD_ROOTS}
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_python_dash_m_mailstorm_is_the_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mailstorm", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    for command in ("run", "validate", "schema", "esp", "worker", "report", "compare", "sizing"):
        assert command in out.stdout
