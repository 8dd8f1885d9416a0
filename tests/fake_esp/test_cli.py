"""``python -m mailstorm.fake_esp`` / ``mailstorm esp``: bad input ends in one line naming what is wrong."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailstorm.ports import free_port


def esp_cli(*args: str, module: str = "fake_esp") -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", module, *(["esp"] if module == "mailstorm.cli" else []), *args]
    cmd += ["--smtp-port", str(free_port()), "--control-port", str(free_port())]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            "faults:\n  - {type: reply, phase: mail, reply: '451 4.3.0 x', probability: 1.5}\n",
            "faults[0].probability",
        ),
        ("- {type: latency, phase: mail, ms: 5}\n- {type: nope}\n", "faults[1].type"),
        ("- {type: reply, phase: rcpt, reply: 'hello'}\n", "faults[0].reply"),
        ("faults: [unclosed\n", "not valid YAML"),
        ("just a string\n", "expected a list of faults"),
    ],
)
def test_bad_faults_file_is_one_line(tmp_path, content, needle):
    """A malformed --faults file is refused before anything listens, naming the file and the field."""
    path = tmp_path / "faults.yaml"
    path.write_text(content)
    out = esp_cli("--faults", str(path), "--ledger", str(tmp_path / "l"))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert str(path) in line and needle in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--faults", "/nonexistent/faults.yaml"], "--faults /nonexistent/faults.yaml"),
        (["--processes", "0"], "--processes"),
        (["--max-message-size", "10"], "--max-message-size"),
        (["--seed", "abc"], "--seed"),
        (["--keep-messages", "-1"], "--keep-messages"),
    ],
)
def test_bad_arguments_are_one_line(tmp_path, args, needle):
    """Bad flags exit 2 with one line naming the flag, from both entry points."""
    for module in ("fake_esp", "mailstorm.cli"):
        out = esp_cli(*args, "--ledger", str(tmp_path / "l"), module=module)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], lines


def test_port_in_use_is_one_line(tmp_path, esp):
    """A port already taken is reported as such, naming the flag."""
    cmd = [
        sys.executable,
        "-m",
        "mailstorm.fake_esp",
        "--smtp-port",
        str(esp.port),
        "--control-port",
        str(free_port()),
    ]
    out = subprocess.run([*cmd, "--ledger", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert f"--smtp-port {esp.port}" in line
