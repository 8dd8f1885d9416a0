"""docs/extending.md runs: each worked example (a fault, an ESP, a target, a chaos toxic, a report
section) is taken out of the page and used as a user would use it.

The plugin files go into a temporary folder that ``tests/plugins.py`` appends to the plugin packages'
``__path__`` in every process these tests start: the same as the file being in the package's folder,
with no other edit anywhere. In particular the fault from the page (``suppression``, issue 12 point 4)
reaches ``FAULT_TYPES``, ``--help``, the JSON Schema, the scenario parser with its error messages, the
control API and a real fake ESP that applies it.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.spec import FAULT_TYPES
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port
from mailstorm.reports.analysis import analyze
from mailstorm.reports.render import _env
from mailstorm.reports.synthetic import synthesize
from tests.fake_esp.http_support import Receiver, wait_until
from tests.plugins import command

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
_EXAMPLE = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)\n```", re.S)
# Where a plugin file of the page goes in the folder tests/plugins.py adds to the packages.
PLUGIN_DIRS = {
    "fake_esp/faults/": "faults",
    "fake_esp/esps/": "esps",
    "harness/targets/": "targets",
    "harness/chaosproxy/toxics/": "toxics",
}


def examples() -> dict[str, str]:
    """The page's examples by name (a repository path for a plugin file, a label otherwise)."""
    found = _EXAMPLE.findall(PAGE.read_text(encoding="utf-8"))
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"an example name is used twice: {names}"
    return {name: code + "\n" for name, code in found}


EXAMPLES = examples()


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's plugin files, laid out for tests/plugins.py."""
    folder = tmp_path_factory.mktemp("plugins")
    for name, code in EXAMPLES.items():
        prefix = next((p for p in PLUGIN_DIRS if name.startswith(p)), None)
        if prefix is not None:
            path = folder / PLUGIN_DIRS[prefix] / name.removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code, encoding="utf-8")
    return folder


def mailstorm(plugins: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(plugins, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def scenario(tmp_path: Path, example: str, **changes: Any) -> Path:
    data = {**yaml.safe_load(EXAMPLES[example]), **changes}
    path = tmp_path / f"{example}.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


class PluginEsp(EspProcess):
    """A fake ESP child process that has the page's plugins (the same process, started through them)."""

    def __init__(self, plugins: Path, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.plugins = plugins

    def command(self) -> list[str]:
        base = super().command()
        assert base[1:3] == ["-m", "mailstorm.fake_esp"]
        return command(self.plugins, "esp", *base[3:])


def test_every_example_file_is_lint_clean(plugins):
    """The page's plugin files pass the project's own ruff rules and formatting."""
    ruff = [sys.executable, "-m", "ruff"]
    config = ["--config", str(ROOT / "pyproject.toml")]
    check = subprocess.run(
        [*ruff, "check", *config, str(plugins)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [*ruff, "format", "--check", *config, str(plugins)], capture_output=True, text=True, check=False
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


# -- a fault ------------------------------------------------------------------------------------------


def test_a_fault_added_by_one_file_reaches_the_types_and_the_help(plugins):
    """With only the page's suppression.py added: FAULT_TYPES has it and `mailstorm esp --help` lists it.
    The checkout itself has no such fault (this process never saw the file)."""
    assert "suppression" not in FAULT_TYPES
    code = "from mailstorm.fake_esp.spec import FAULT_TYPES; print(','.join(FAULT_TYPES))"
    types = mailstorm(plugins, "-c", code)
    assert types.returncode == 0, types.stderr
    assert types.stdout.strip().split(",") == sorted([*FAULT_TYPES, "suppression"])
    helped = mailstorm(plugins, "esp", "--help")
    assert "suppression" in " ".join(helped.stdout.split())


def test_the_schema_has_every_plugin_the_page_adds(plugins):
    """`mailstorm schema` (the scenario's JSON Schema) is built from the registries: the fault in both
    fault unions (esp.faults, esp_fault steps), the target kind, the toxic in network steps, and the
    ESP's webhook format."""
    schema = json.loads(mailstorm(plugins, "schema").stdout)
    defs = schema["$defs"]
    fault = defs["SuppressionFault"]
    assert fault["properties"]["type"]["const"] == "suppression" and "domains" in fault["required"]
    step = defs["ChaosStep"]["properties"]["esp_fault"]["anyOf"][0]
    start = defs["EspSection"]["properties"]["faults"]["items"]
    for union in (step, start):
        assert union["discriminator"]["mapping"]["suppression"] == "#/$defs/SuppressionFault"
    assert defs["SinkSpec"]["properties"]["kind"]["const"] == "sink"
    assert schema["properties"]["target"]["discriminator"]["mapping"]["sink"] == "#/$defs/SinkSpec"
    network = defs["ChaosStep"]["properties"]["network"]["anyOf"][0]
    assert network["discriminator"]["mapping"]["limit_data"] == "#/$defs/LimitDataSpec"
    assert "examplemail" in json.dumps(defs["WebhookSpec"]["properties"]["format"])


def test_a_fault_added_by_one_file_is_parsed_with_errors_naming_its_fields(plugins, tmp_path):
    """A scenario using it validates; one with a bad field is one line naming the field and line; a
    misspelled type lists it among the known ones."""
    ok = mailstorm(plugins, "validate", str(scenario(tmp_path, "suppression-scenario")))
    assert ok.returncode == 0 and ": ok: suppressed-domain" in ok.stdout, ok.stderr
    bad = scenario(tmp_path, "suppression-scenario", esp={"faults": [{"type": "suppression", "domains": []}]})
    out = mailstorm(plugins, "validate", str(bad))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "esp.faults[0].domains" in out.stderr
    faults = tmp_path / "faults.yaml"
    faults.write_text("- {type: suppresion, domains: [x.example]}\n")
    ledger = str(tmp_path / "ledger")
    ports = ["--smtp-port", str(free_port()), "--control-port", str(free_port()), "--ledger", ledger]
    out = mailstorm(plugins, "esp", "--faults", str(faults), *ports)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "faults[0].type: unknown fault type 'suppresion'; known: " in out.stderr
    assert ", suppression, " in out.stderr


def test_a_fault_added_by_one_file_is_applied_by_a_real_fake_esp(plugins, tmp_path):
    """A fake ESP started with the fault (--faults) refuses RCPT at the listed domain with 550 5.1.1 and
    takes the others; one added through the control API at run time answers its own reply; the
    ledger's esp.fault records name the type."""
    start = [{"name": "suppressed", "type": "suppression", "domains": ["blocked.example"]}]
    with PluginEsp(plugins, tmp_path / "ledger", faults=start, log_path=tmp_path / "esp.log") as esp:
        with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("app@example.test")
            assert s.rcpt("someone@Blocked.Example") == (550, b"5.1.1 Mailbox unavailable")
            assert s.rcpt("someone@fine.example")[0] == 250
        esp.control.add_fault(
            {"type": "suppression", "domains": ["other.example"], "reply": "550 5.7.1 Nope"}
        )
        with smtplib.SMTP(esp.smtp_host, esp.smtp_port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail("app@example.test")
            assert s.rcpt("a@other.example") == (550, b"5.7.1 Nope")
        fired = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_FAULT]) if r.get("ftype")]
        assert {r["ftype"] for r in fired} == {"suppression"} and len(fired) == 2
    assert "Traceback" not in (tmp_path / "esp.log").read_text()


# -- an ESP -------------------------------------------------------------------------------------------


def test_an_esp_added_by_one_folder_is_served_throttled_and_posts_its_webhooks(plugins, tmp_path):
    """The page's Example Mail folder: `--profile examplemail` loads its profile, its API answers beside
    the real ones (401 without a key, 200 with an id that is the ledger's esp_id), its profile's limit
    (one per 10 s) gives a 429 with Retry-After, and the accepted message's webhook is posted in its
    format; `--list-profiles` shows it."""
    listed = mailstorm(plugins, "esp", "--list-profiles")
    assert any(
        line.split()[0] == "examplemail" and line.endswith("Example Mail")
        for line in listed.stdout.splitlines()
    )
    url = "/examplemail/v1/send"
    body = {"from": "app@example.test", "to": ["u@example.test"], "headers": {CORRELATION_HEADER: "ex-1"}}
    with Receiver() as rx:
        hooks = tmp_path / "hooks.yaml"
        hooks.write_text(yaml.safe_dump({"url": rx.url}))
        extra = ["--webhooks", str(hooks)]
        esp = PluginEsp(
            plugins, tmp_path / "ledger", http_port=free_port(), profile="examplemail", extra_args=extra
        )
        with esp:
            assert requests.post(esp.http_url + url, json=body, timeout=10).status_code == 401
            auth = {"Authorization": "Bearer ex-key"}
            ok = requests.post(esp.http_url + url, json=body, headers=auth, timeout=10)
            assert ok.status_code == 200, ok.text
            throttled = requests.post(esp.http_url + url, json=body, headers=auth, timeout=10)
            assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
            assert throttled.json() == {"error": "Too many requests"}
            wait_until(lambda: len(rx.posts) >= 1)
            (rec,) = LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED])
        ((_, posted),) = rx.posts
    assert (rec["api"], rec["id"], rec["esp_id"], rec["key"]) == (
        "examplemail",
        "ex-1",
        ok.json()["id"],
        fingerprint("ex-key"),  # the ledger names a key, never holds it
    )
    event = json.loads(posted)
    assert (event["type"], event["ref"], event["message_id"], event["recipient"]) == (
        "delivered", "ex-1", rec["esp_id"], "u@example.test",
    )  # fmt: skip


# -- a target -----------------------------------------------------------------------------------------


def test_a_target_added_by_one_file_runs_and_its_lost_mail_is_caught(plugins, tmp_path):
    """`target: {kind: sink}` validates; a real `mailstorm run` against it submits, the sink accepts
    everything and delivers nothing, and the run says so: every message lost, exit 1."""
    path = scenario(tmp_path, "sink-scenario")
    ok = mailstorm(plugins, "validate", str(path))
    assert ok.returncode == 0 and "target sink" in ok.stdout, ok.stderr
    run = mailstorm(plugins, "run", str(path), "--out", str(tmp_path / "runs"), "--quiet", timeout=240)
    assert run.returncode == 1, run.stdout + run.stderr
    (report,) = (tmp_path / "runs").glob("*/report.json")
    outcomes = json.loads(report.read_text())["outcomes"]
    assert outcomes["submitted"] > 0 and outcomes["lost"] == outcomes["submitted"]


# -- a chaos toxic ------------------------------------------------------------------------------------


def test_a_toxic_added_by_one_file_cuts_the_stream_after_its_bytes(plugins, tmp_path):
    """A `network:` step with limit_data validates; through a real chaos proxy in front of a fake ESP,
    limit_data of 10 bytes downstream lets exactly the first 10 bytes of the banner through, then the
    connection closes."""
    ok = mailstorm(plugins, "validate", str(scenario(tmp_path, "limit-data-scenario")))
    assert ok.returncode == 0, ok.stderr
    code = textwrap.dedent(
        f"""
        import socket
        from mailstorm.fake_esp.launch import EspProcess
        from mailstorm.harness.chaosproxy.proxy import ChaosProxy

        def banner(port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                got = b""
                while not got.endswith(b"\\r\\n"):
                    chunk = s.recv(1024)
                    if not chunk:
                        return got, True
                    got += chunk
                return got, False

        with EspProcess({str(tmp_path / "ledger")!r}) as esp:
            proxy = ChaosProxy(("127.0.0.1", esp.smtp_port)).start()
            whole, _ = banner(proxy.port)
            proxy.add_toxic({{"type": "limit_data", "bytes": 10, "stream": "downstream"}})
            cut, closed = banner(proxy.port)
            proxy.stop()
            print(repr((whole, cut, closed)))
        """
    )
    out = mailstorm(plugins, "-c", code)
    assert out.returncode == 0, out.stderr
    whole, cut, closed = eval(out.stdout.strip())
    assert whole.startswith(b"220 ") and len(whole) > 10
    assert cut == whole[:10] and closed


# -- a report section ---------------------------------------------------------------------------------


def test_a_report_section_is_computed_valid_and_rendered(tmp_path):
    """Over a known-answer run with an ESP outage: the figure counts the ESP's refusals as the ledger
    holds them, matches its schema entry (with the report schema's $defs), and renders its line."""
    namespace: dict[str, Any] = {"Any": Any}
    exec(EXAMPLES["esp-refusals-figure"], namespace)
    synthesize(tmp_path / "run", rates=(50.0,) * 10, capacity=100.0, outage=(3.0, 5.0))
    figures = analyze(tmp_path / "run").figures
    section = namespace["esp_refusals"](figures)
    refusals = [r["code"] for r in LedgerReader(tmp_path / "run" / "ledger").records([Kind.ESP_REPLIED])]
    transient = sum(1 for c in refusals if 400 <= c < 500)
    assert transient > 0 and section == {
        "transient": transient,
        "permanent": sum(1 for c in refusals if c >= 500),
        "per_message": round(len(refusals) / figures["outcomes"]["submitted"], 4),
    }
    report_schema = json.loads((ROOT / "reports" / "schema" / "report.schema.json").read_text())
    entry = {**json.loads(EXAMPLES["esp-refusals-schema"]), "$defs": report_schema["$defs"]}
    jsonschema.validate(section, entry)
    line = _env.from_string(EXAMPLES["esp-refusals-template"]).render(**figures, esp_refusals=section)
    per = section["per_message"]
    assert line.strip() == f"ESP refusals: {transient} transient, 0 permanent ({per:g} per message)."
