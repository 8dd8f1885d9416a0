"""A fake ESP served by a fleet of hosts (``esp.hosts``, ``mailstorm esp --join``), on loopback: the
"hosts" are 127.0.0.2 and 127.0.0.3 (loopback, so no allowance is needed; the network-namespace test in
tests/hardening/test_distributed.py runs the same across namespaces with the allowance).

Checked: the join API's refusals (token, address, a second join) and that a ledger batch sent twice is
written once; then a whole run: every message counted exactly once across both hosts, a timeline ESP
fault at both hosts, both hosts' ledgers in the one report, and the run token and clock offsets in run.json.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mailstorm.errors import ConfigError
from mailstorm.harness.esp_hosts import TOKEN_ENV, EspHosts, clock_shift_ns, shift_times
from mailstorm.harness.scenario import EspSection, load_scenario_text
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ledger.io import decode, encode_line
from mailstorm.ports import free_port
from tests.harness.sut_support import ROOT, run_cli, start_run, wait_for_load
from tests.records import accepted, replied

TOKEN = "fleet-test-token-0123456789"


def _post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_join_api_refuses_strangers_and_writes_a_batch_sent_twice_once(tmp_path, monkeypatch):
    """Wrong token 401, an address not in esp.hosts 403, a second join from one address 409; a ledger
    batch re-sent from an older offset (a retry after a lost answer) adds only what is new, and a gap is
    answered with the offset the runner has."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    spec = EspSection(hosts=("127.0.0.2",))
    hosts = EspHosts(spec, seed=1, run_id="r", ledger_dir=tmp_path, allow_remote=False)
    url = hosts.serve()
    try:
        join = f"{url}/fleet/join"
        assert _post(join, b'{"address": "127.0.0.2"}', token="wrong-token-wrong-token")[0] == 401
        assert _post(join, b'{"address": "127.0.0.9"}')[0] == 403
        status, answer = _post(join, b'{"address": "127.0.0.2"}')
        assert status == 200 and answer["index"] == 1 and answer["esp"]["profile"] is None
        assert _post(join, b'{"address": "127.0.0.2"}')[0] == 409
        line1 = b'{"k":"esp.accepted","t":1,"src":"esp-smtp-0","id":"a"}\n'
        line2 = b'{"k":"esp.accepted","t":2,"src":"esp-smtp-0","id":"b"}\n'
        ship = f"{url}/fleet/ledger?index=1&file=esp-smtp-0&offset="
        assert _post(ship + "0", line1)[1]["offset"] == len(line1)
        assert _post(ship + "0", line1 + line2)[1]["offset"] == len(line1 + line2)  # line1 again: skipped
        status, answer = _post(ship + "999", line2)
        assert (status, answer["offset"]) == (409, len(line1 + line2))
        assert _post(f"{url}/fleet/ledger?index=1&file=esp-smtp-7&offset=0", line1)[0] == 400
    finally:
        hosts.stopping = True
        hosts.hosts[0].left = True
        hosts.stop()
    written = (tmp_path / "esp-smtp-100.jsonl").read_bytes()
    assert written == (line1 + line2).replace(b'"src":"esp-smtp-0"', b'"src":"esp-smtp-100"')


def test_a_host_clock_off_by_more_than_the_measurement_can_tell_is_corrected():
    """An offset within half the round trip is noise (no shift); past it, every line's ``t`` is moved by
    it and nothing else of the line changes, a correlation id that looks like a "t" key included."""
    assert clock_shift_ns(0.2, 0.5) == 0 and clock_shift_ns(-0.2, 0.5) == 0
    assert clock_shift_ns(1500.0, 0.5) == 1_500_000_000 and clock_shift_ns(-3.0, 1.0) == -3_000_000
    records = [replied('x"t":5', 451), accepted("b")]
    lines = b"".join(encode_line(r, t=2_000_000_000 + i, src="esp-smtp-100") for i, r in enumerate(records))
    shifted = shift_times(lines, 1_500_000_000).splitlines()
    got = [decode(line) for line in shifted]
    assert [r.t for r in got] == [500_000_000, 500_000_001]
    assert [r.id for r in got] == ['x"t":5', "b"]
    assert shifted[0].replace(b"500000000", b"2000000000") == lines.splitlines()[0]


def test_the_scenario_in_docs_distributed_is_valid():
    """docs/distributed.md's scenario for two ESP hosts validates as it is written."""
    text = (ROOT / "docs" / "distributed.md").read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    scenario = load_scenario_text(block)
    assert scenario.esp.hosts == ("10.0.1.2", "10.0.2.2") and scenario.allow_remote


def test_a_fleet_of_hosts_refuses_what_it_cannot_do():
    """A crash outage, network chaos and TLS need an ESP the runner starts: one line each."""
    base = "name: f\nduration: 5s\nload: {shape: {kind: steady, rate: 1}}\nesp: {hosts: [127.0.0.2]"
    with pytest.raises(ConfigError, match="mode refuse or hang"):
        load_scenario_text(base + "}\nchaos: [{at: 1s, for: 1s, esp_outage: {mode: crash}}]\n")
    with pytest.raises(ConfigError, match="chaos proxy"):
        load_scenario_text(base + "}\nchaos: [{at: 1s, for: 1s, network: {type: latency, ms: 5}}]\n")
    with pytest.raises(ConfigError, match="tls: off"):
        load_scenario_text(base + ", tls: starttls}\n")
    with pytest.raises(ConfigError, match="listed twice"):
        load_scenario_text(base.replace("127.0.0.2]", "127.0.0.2, 127.0.0.2]") + "}\n")


def test_join_refuses_a_runner_off_loopback_without_the_allowance_and_a_missing_token(monkeypatch):
    """``mailstorm esp --join``: one line and exit 2, before anything is sent or started."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    cmd = [sys.executable, "-m", "mailstorm.cli", "esp", "--join"]
    out = subprocess.run([*cmd, "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "run token" in out.stderr and "Traceback" not in out.stderr
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    off = [*cmd, "http://198.51.100.7:9", "--join-wait", "0"]  # TEST-NET-2: refused before any packet
    out = subprocess.run(off, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "not a loopback address" in out.stderr, out.stderr
    out = subprocess.run([*cmd, "127.0.0.1:9"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "expected http://HOST:PORT" in out.stderr, out.stderr


def join_command(url: str, address: str, spool: Path, *extra: str) -> list[str]:
    """``mailstorm esp --join`` as a user types it on a host."""
    return [
        sys.executable, "-m", "mailstorm.cli", "esp", "--join", url, "--advertise", address,
        "--smtp-port", str(free_port()), "--control-port", str(free_port()), "--ledger", str(spool), *extra,
    ]  # fmt: skip


def fleet_scenario(path: Path, hosts: list[str], listen: str, *, allow_remote: bool = False) -> Path:
    path.write_text(
        f"""name: esp-hosts
seed: 5
duration: 6s
drain_deadline: 30s
allow_remote: {str(allow_remote).lower()}
target: {{kind: reference, instances: 2}}
esp:
  hosts: [{", ".join(hosts)}]
  join_listen: "{listen}"
  join_timeout: 60s
load:
  shape: {{kind: steady, rate: 20}}
chaos:
  - {{at: 2s, for: 2s, name: deferrals, esp_fault: {{type: reply, phase: eod, reply: "451 4.3.0 Try later",
      probability: 0.5}}}}
slo: {{max_lost: 0}}
"""
    )
    return path


def check_fleet_run(run_dir: Path, code: int, err: str, hosts: list[str]) -> None:
    """Every message counted once across the hosts, the fault at each, one report over both ledgers."""
    assert code == 0, err
    ledger = run_dir / "ledger"
    files = sorted(p.name for p in ledger.glob("esp-*.jsonl"))
    assert files == ["esp-smtp-100.jsonl", "esp-smtp-200.jsonl"], files
    reader = LedgerReader(ledger)
    accepted = {r["id"] for r in reader.records([Kind.LOAD_SUBMIT]) if r["ok"]}
    by_file: dict[str, list[str]] = {}
    deferred: dict[str, int] = {}
    for path in reader.files():
        if path.name.startswith("esp-"):
            recs = list(reader.iter_file(path))
            assert {r["src"] for r in recs} == {path.stem}
            by_file[path.stem] = [r["id"] for r in recs if r["k"] == Kind.ESP_ACCEPTED]
            deferred[path.stem] = sum(
                1 for r in recs if r["k"] == Kind.ESP_REPLIED and r.get("fault") == "deferrals"
            )
    assert all(by_file.values()), f"a host took nothing: { {k: len(v) for k, v in by_file.items()} }"
    assert all(deferred.values()), f"the timeline fault did not reach every host: {deferred}"
    at_esp = [i for ids in by_file.values() for i in ids]
    report = json.loads((run_dir / "report.json").read_text())
    outcomes = report["outcomes"]
    assert len(accepted) > 50
    assert set(at_esp) == accepted
    assert outcomes["delivered"] + outcomes["duplicated"] == len(accepted)
    assert outcomes["duplicated"] == len(at_esp) - len(set(at_esp))
    assert outcomes["lost"] == 0 and outcomes["pending"] == 0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["join"]["token"] == TOKEN and info["join"]["url"].startswith("http://")
    assert [h["smtp"].rsplit(":", 1)[0] for h in info["esp_hosts"]] == hosts
    # One machine, one clock: the measured offset is within its uncertainty, so nothing is shifted.
    assert all(abs(h["clock_offset_ms"]) <= h["rtt_ms"] / 2 + 1 for h in info["esp_hosts"]), info["esp_hosts"]
    assert all(h["clock_shift_ms"] == 0 for h in info["esp_hosts"]), info["esp_hosts"]
    print(
        f"fleet run: {len(accepted)} accepted, per host "
        f"{ {k: len(v) for k, v in by_file.items()} }, deferred by the fault {deferred}, "
        f"clock offsets {[h['clock_offset_ms'] for h in info['esp_hosts']]} ms"
    )


def test_a_run_served_by_two_hosts_counts_every_message_once(tmp_path, monkeypatch):
    """Two fake ESPs join from 127.0.0.2 and 127.0.0.3 before the runner is up (they wait for it); the
    reference pipeline's two instances each relay to one of them; a timeline fault defers half the mail
    at both; the one report counts every message, nothing lost, and both hosts' ledgers are in it."""
    port = free_port()
    hosts = ["127.0.0.2", "127.0.0.3"]
    scenario = fleet_scenario(tmp_path / "fleet.yaml", hosts, f"127.0.0.1:{port}")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the hosts' and the runner's (run_cli inherits it)
    url = f"http://127.0.0.1:{port}"
    commands = {h: join_command(url, h, tmp_path / f"spool-{h}") for h in hosts}
    code, run_dir, err = run_fleet(tmp_path, scenario, commands)
    check_fleet_run(run_dir, code, err, hosts)
    assert err.count("left run") == 2


@pytest.mark.long  # ~25 s; the failure path of the join protocol (the default suite has the good one)
def test_a_host_whose_fake_esp_dies_fails_the_run(tmp_path, monkeypatch):
    """A host's fake ESP killed mid-run: the host says so with its next ledger call, the runner stops the
    run naming the host (exit 3), the other host is stopped as at any end, and the reports are built."""
    port = free_port()
    hosts = ["127.0.0.2", "127.0.0.3"]
    scenario = fleet_scenario(tmp_path / "fleet.yaml", hosts, f"127.0.0.1:{port}")
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    url, out, stderr = f"http://127.0.0.1:{port}", tmp_path / "runs", tmp_path / "runner.err"
    with joined(tmp_path, {h: join_command(url, h, tmp_path / f"spool-{h}") for h in hosts}) as procs:
        run = start_run(scenario, out, stderr)
        try:
            run_dir = wait_for_load(run, out, stderr)
            (esp,) = psutil.Process(procs["127.0.0.2"].pid).children()
            esp.kill()
            code = run.wait(120)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert procs["127.0.0.3"].wait(60) == 0
        assert procs["127.0.0.2"].wait(60) == 3
    err = stderr.read_text()
    assert code == 3, err
    assert "fake ESP on host 127.0.0.2 died" in err
    assert (run_dir / "report.json").exists()


@contextlib.contextmanager
def joined(tmp_path: Path, commands: dict[str, list[str]]) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """The hosts' ``mailstorm esp --join`` processes (address -> command), each logging to
    ``host-<address>.log``; whatever is left is killed after."""
    logs = {a: (tmp_path / f"host-{a}.log").open("wb") for a in commands}
    procs = {
        a: subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=logs[a], stderr=subprocess.STDOUT)
        for a, cmd in commands.items()
    }
    try:
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()


def run_fleet(
    tmp_path: Path, scenario: Path, commands: dict[str, list[str]], *args: str
) -> tuple[int, Path, str]:
    """``mailstorm run`` with the hosts joining; (exit code, run directory, the runner's and the hosts'
    output), each host having exited 0."""
    with joined(tmp_path, commands) as procs:
        code, run_dir, err = run_cli(scenario, tmp_path / "runs", *args, timeout=240)
        codes = {a: proc.wait(60) for a, proc in procs.items()}
    err += "".join((tmp_path / f"host-{a}.log").read_text() for a in commands)
    assert set(codes.values()) == {0}, f"{codes}: {err}"
    return code, run_dir, err


# -- across network namespaces ------------------------------------------------------------------------

NETNS_SUBNETS = [f"10.231.{n}.0/24" for n in range(10, 250, 10)]  # private; the first pair free here


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /24s of NETNS_SUBNETS that no route or address of this machine overlaps."""
    out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    used = []
    for line in out.splitlines():
        dst = line.split()[0] if line.split() else ""
        if dst and dst not in ("default", "local", "broadcast", "unreachable"):
            try:
                used.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                continue
        elif dst in ("local", "broadcast") and len(line.split()) > 1:
            used.append(ipaddress.ip_network(line.split()[1], strict=False))
    free = [n for n in map(ipaddress.ip_network, NETNS_SUBNETS) if not any(n.overlaps(u) for u in used)]
    if len(free) < count:
        pytest.skip(f"no free private /24 among {NETNS_SUBNETS[0]}..: this machine routes them all")
    return free[:count]


@pytest.fixture
def two_esp_hosts():
    """Two network namespaces, each a "host" joined to the root namespace by a veth pair with private
    addresses (root end .1, namespace end .2); the second namespace reaches the runner's address on the
    first pair by a host route. Yields [(namespace, host address, runner address)]; everything is
    deleted after (deleting a namespace deletes its veth pair, root end included)."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2's ip")
    tag = f"{os.getpid() % 100000}"
    made: list[str] = []
    hosts = []
    try:
        for letter, net in zip("ab", _free_subnets(2), strict=True):
            ns, outer, inner = f"ms-fleet-{tag}-{letter}", f"msf{tag}{letter}0", f"msf{tag}{letter}1"
            root_addr, host_addr = str(net.network_address + 1), str(net.network_address + 2)
            try:
                _ip("netns", "add", ns)
            except subprocess.CalledProcessError as exc:
                pytest.skip(f"ip netns add failed here: {exc.stderr.decode().strip()}")
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns)
            _ip("addr", "add", f"{root_addr}/24", "dev", outer)
            _ip("link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{host_addr}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            hosts.append((ns, host_addr, root_addr))
        runner = hosts[0][2]
        _ip("-n", hosts[1][0], "route", "add", f"{runner}/32", "via", hosts[1][2])
        yield hosts
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def test_a_run_across_network_namespaces_counts_every_message_once(tmp_path, monkeypatch, two_esp_hosts):
    """The runner, the reference pipeline and the load in the root namespace, a fake ESP in each of two
    namespaces joined over veth pairs: the run needs the allowance in the file and on the command line
    (refused without the flag, before anything starts); with it, every message is counted once across
    both hosts and the timeline's fault reaches both."""
    hosts = [addr for _, addr, _ in two_esp_hosts]
    runner = two_esp_hosts[0][2]
    port = free_port(runner)
    scenario = fleet_scenario(tmp_path / "fleet.yaml", hosts, f"{runner}:{port}", allow_remote=True)
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    refused = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "run", str(scenario), "--out", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert refused.returncode == 2 and "not a loopback address" in refused.stderr, refused.stderr
    url = f"http://{runner}:{port}"
    commands = {
        addr: ["ip", "netns", "exec", ns, *join_command(url, addr, tmp_path / f"s-{addr}", "--allow-remote")]
        for ns, addr, _ in two_esp_hosts
    }
    code, run_dir, err = run_fleet(tmp_path, scenario, commands, "--allow-remote")
    check_fleet_run(run_dir, code, err, hosts)
