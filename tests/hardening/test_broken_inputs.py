"""A corpus of broken user inputs (tests/hardening/broken/): scenario files, fault files, webhook files,
control API requests and command lines. Each is refused with one clear line naming what is wrong: exit
2 and exactly one line on stderr (CLI), or 400 with a one-line JSON error (API); never a traceback,
never a crash or a hang. tests/harness/broken_scenarios/ holds 35 more scenario files (their own test).

Every CLI case runs as a user runs it: ``python -m mailstorm.cli ...`` in a subprocess.
"""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ports import free_port
from tests.hardening.support import ROOT

BROKEN = Path(__file__).with_name("broken")
SCENARIOS = sorted((BROKEN / "scenarios").glob("*.yaml"))
FAULT_FILES = sorted((BROKEN / "faults").glob("*.yaml"))
WEBHOOK_FILES = sorted((BROKEN / "webhooks").glob("*.yaml"))


def _table(name: str) -> list[list[str]]:
    rows = (BROKEN / name).read_text().splitlines()
    return [row.split("\t") for row in rows if row.strip() and not row.startswith("#")]


def _body(text: str) -> bytes:
    """A bytes literal, or ``LITERAL * N`` (a body too long to write out)."""
    literal, star, times = text.rpartition(" * ")
    return ast.literal_eval(literal) * int(times) if star and times.isdigit() else ast.literal_eval(text)


API_CASES = [(needle, *target.split(" ", 1), _body(body)) for needle, target, body in _table("api.txt")]
CLI_CASES = _table("cli.txt")


def expectation(path: Path) -> str:
    """The NEEDLE of a file's first line ``# expect: [LINE] NEEDLE`` (LINE: scenario files)."""
    return path.read_bytes().split(b"\n", 1)[0].decode().removeprefix("# expect: ")


def cli_args(case: str | Path, kind: str, tmp: Path) -> list[str]:
    if kind == "scenario":
        return ["validate", str(case)]
    if kind in ("faults", "webhooks"):
        args = ["esp", f"--{kind}", str(case)]
    else:
        empty = tmp / "empty"
        empty.mkdir(exist_ok=True)
        args = [a.format(broken=BROKEN, tmp=tmp, empty=empty) for a in shlex.split(str(case))]
    if args[0] == "esp":
        args += ["--smtp-port", str(free_port()), "--control-port", str(free_port())]
        if "--ledger" not in args:
            args += ["--ledger", str(tmp / "ledger")]
    return args


def mailstorm(args: list[str]) -> subprocess.CompletedProcess[str] | str:
    """The CLI as a subprocess; a string when it did not finish in time (a broken input must not run)."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "mailstorm.cli", *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return f"still running after 60 s: {args}"


ALL_CLI = (
    [("scenario", p) for p in SCENARIOS]
    + [("faults", p) for p in FAULT_FILES]
    + [("webhooks", p) for p in WEBHOOK_FILES]
    + [("cli", args) for _, args in CLI_CASES]
)


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str] | str]:
    """Every CLI case run once, four at a time (each is a fresh interpreter)."""
    tmp = tmp_path_factory.mktemp("broken-cli")
    with ThreadPoolExecutor(4) as pool:
        results = pool.map(lambda c: mailstorm(cli_args(c[1], c[0], tmp)), ALL_CLI)
        return {str(case): out for (_, case), out in zip(ALL_CLI, results, strict=True)}


def test_the_corpus_holds_at_least_forty_broken_inputs():
    """The corpus covers scenario files, fault and webhook files, API requests and command lines: 40+."""
    counts = [len(SCENARIOS), len(FAULT_FILES), len(WEBHOOK_FILES), len(API_CASES), len(CLI_CASES)]
    assert all(counts) and sum(counts) >= 40, counts


def one_line_exit_2(out: subprocess.CompletedProcess[str] | str, needle: str) -> None:
    assert not isinstance(out, str), out
    assert "Traceback" not in out.stderr + out.stdout, out.stderr
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_broken_scenario_file(path, refused):
    """`mailstorm validate FILE` exits 2 with one line: FILE:LINE: field: why."""
    line, what = expectation(path).split(" ", 1)
    out = refused[str(path)]
    one_line_exit_2(out, what)
    assert f"{path}:{line}: " in out.stderr


@pytest.mark.parametrize("path", FAULT_FILES + WEBHOOK_FILES, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_broken_esp_file(path, refused):
    """`mailstorm esp --faults FILE` / `--webhooks FILE` exits 2 with one line naming the file and field,
    before anything listens."""
    out = refused[str(path)]
    one_line_exit_2(out, expectation(path))
    assert str(path) in out.stderr or path.stem == "remote-url"  # that one names the URL it refuses


@pytest.mark.parametrize(("needle", "args"), CLI_CASES, ids=[a for _, a in CLI_CASES])
def test_broken_command_line(needle, args, refused):
    """A bad command line exits 2 with one line naming the argument."""
    one_line_exit_2(refused[args], needle)


@pytest.fixture(scope="module")
def esp(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("broken-api")
    with EspProcess(d / "ledger", log_path=d / "esp.log") as proc:
        yield proc


@pytest.mark.parametrize(("needle", "method", "path", "body"), API_CASES, ids=[c[0] for c in API_CASES])
def test_broken_control_api_request(esp, needle, method, path, body):
    """A broken request gets 400 with a one-line JSON error naming the field; nothing is installed and
    the ESP carries on."""
    req = urllib.request.Request(
        esp.control_url + path, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 400
    error = json.loads(err.value.read())["error"]
    assert needle in error and "\n" not in error and "Traceback" not in error, error
    assert esp.control.faults() == [] and esp.alive()
