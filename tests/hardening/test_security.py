"""Security defaults, each checked on real sockets.

The off-loopback checks need an address that is not loopback. Traffic may only go to loopback or to
network namespaces we make, so those tests run inside a network namespace this module creates, holding
a veth pair (both ends inside it) with a TEST-NET-2 address:
`test_off_loopback_checks_in_a_network_namespace` re-runs them there (they skip, saying so, when run
outside it). What is checked:

- the fake ESP's control API and SMTP listener, and the reference pipeline, listen on loopback only
  unless told otherwise;
- off loopback, the control API answers only requests that carry the token;
- off loopback, the reference pipeline is no open relay: a peer outside its relay networks gets 554 at
  RCPT and nothing is queued;
- a non-loopback load target is refused unless both the scenario file and the command line allow it,
  before anything starts.

Covered elsewhere (not repeated): the ESP refuses a non-loopback --bind without a token and asks for the
token on loopback too (tests/fake_esp/test_control.py); the reference pipeline refuses a non-loopback
--listen/--relay without --allow-remote and refuses relaying to 127.0.0.2 when only 127.0.0.1/32 may
(tests/harness/test_reference.py); probe URLs need the file and the flag (test_scenario_broken.py).
"""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import psutil
import pytest

from mailstorm import replies
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.harness.targets.base import TargetContext
from mailstorm.harness.targets.reference import ReferenceTarget, ReferenceTargetSpec
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.netguard import is_loopback
from mailstorm.ports import free_port, wait_for_port
from tests.hardening.support import ROOT, message

NETNS_ENV = "MAILSTORM_TEST_NETNS"  # set inside the namespace: the off-loopback tests run for real there
NETNS_ADDRESS = "198.51.100.7"  # TEST-NET-2 (RFC 5737), on a veth inside our own namespace
in_netns = pytest.mark.skipif(
    not os.environ.get(NETNS_ENV),
    reason="runs inside the network namespace made by test_off_loopback_checks_in_a_network_namespace",
)


def outside_address() -> str:
    """The namespace's non-loopback IPv4 address."""
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not is_loopback(a.address):
                return a.address
    raise AssertionError("the test namespace has no non-loopback IPv4 address")


@pytest.mark.skipif(os.environ.get(NETNS_ENV) is not None, reason="already inside the namespace")
def test_off_loopback_checks_in_a_network_namespace(tmp_path):
    """The off-loopback tests below pass inside a fresh network namespace (lo up, a veth pair with a
    non-loopback address): no traffic leaves for any address outside it."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("making a network namespace needs root and iproute2's ip")
    ns = f"mailstorm-sec-{os.getpid()}"
    setup = [
        ["ip", "netns", "add", ns],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
        ["ip", "-n", ns, "link", "add", "ms0", "type", "veth", "peer", "name", "ms1"],  # no dummy module here
        ["ip", "-n", ns, "addr", "add", f"{NETNS_ADDRESS}/24", "dev", "ms0"],
        ["ip", "-n", ns, "link", "set", "ms0", "up"],
        ["ip", "-n", ns, "link", "set", "ms1", "up"],
    ]
    try:
        for cmd in setup:
            subprocess.run(cmd, check=True, capture_output=True, timeout=30)
        inner = [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "in_netns"]
        env = {**os.environ, NETNS_ENV: "1"}
        out = subprocess.run(
            ["ip", "netns", "exec", ns, *inner],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=ROOT,
            env=env,
        )
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
        assert "4 passed" in out.stdout, out.stdout[-2000:]
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def listening(pids: list[int]) -> set[str]:
    """The addresses the processes (and their children) listen on."""
    procs = [psutil.Process(p) for p in pids]
    procs += [c for p in list(procs) for c in p.children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}


def http_status(url: str, token: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


@in_netns
def test_in_netns_fake_esp_listens_on_loopback_only_by_default(tmp_path):
    """Started without --bind, every listening socket of the fake ESP (SMTP, control, HTTP APIs) is on
    127.0.0.1, and its ports refuse connections on the machine's outside address."""
    outside = outside_address()
    with EspProcess(tmp_path / "ledger", http_port=free_port(), log_path=tmp_path / "esp.log") as esp:
        assert listening([esp.pid]) == {"127.0.0.1"}
        for port in (esp.smtp_port, esp.control_port, esp.http_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((outside, port), timeout=5).close()


@in_netns
def test_in_netns_reference_pipeline_listens_on_loopback_only_by_default(tmp_path):
    """The reference target (as a scenario's default SUT) listens on 127.0.0.1 only: SMTP and health."""
    outside = outside_address()
    target = ReferenceTarget(ReferenceTargetSpec())
    ctx = TargetContext(tmp_path / "run", tmp_path / "run" / "ledger", 1, esp_smtp=("127.0.0.1", free_port()))
    (endpoint,) = target.start(ctx)
    try:
        assert listening(list(target.pids)) == {"127.0.0.1"}
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((outside, endpoint.port), timeout=5).close()
    finally:
        target.stop()


@in_netns
def test_in_netns_control_api_off_loopback_needs_the_token(tmp_path):
    """Bound to the outside address, the control API answers 401 without the token (or with a wrong one)
    and 200 with it; the SMTP listener serves there."""
    outside = outside_address()
    token = "hardening-token-1"
    smtp_port, control_port = free_port(), free_port()
    cmd = [
        sys.executable,
        "-m",
        "mailstorm.fake_esp",
        "--bind",
        outside,
        "--token",
        token,
        "--ledger",
        str(tmp_path),
    ]
    cmd += ["--smtp-port", str(smtp_port), "--control-port", str(control_port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://{outside}:{control_port}"
    try:
        wait_for_port(outside, control_port, 20, what="control API", alive=lambda: proc.poll() is None)
        assert listening([proc.pid]) == {outside}
        assert http_status(f"{url}/health") == 401
        assert http_status(f"{url}/faults", "wrong-token-x") == 401
        assert http_status(f"{url}/health", token) == 200
        wait_for_port(outside, smtp_port, 20, what="fake ESP SMTP", alive=lambda: proc.poll() is None)
        with smtplib.SMTP(outside, smtp_port, timeout=10) as s:
            assert s.noop()[0] == 250
    finally:
        proc.terminate()
        proc.wait(15)


@in_netns
def test_in_netns_reference_pipeline_off_loopback_is_no_open_relay(tmp_path):
    """Listening on the outside address (--allow-remote), the pipeline refuses a peer from that address
    at RCPT with 554 5.7.1 (default relay networks: loopback), and queues nothing."""
    outside = outside_address()
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mailstorm.harness.reference",
        "--listen",
        f"{outside}:{port}",
        "--allow-remote",
    ]
    cmd += ["--queue", str(tmp_path / "q.sqlite"), "--relay", f"smtp://127.0.0.1:{free_port()}"]
    cmd += ["--ledger", str(tmp_path / "ledger")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_for_port(outside, port, 20, what="reference pipeline", alive=lambda: proc.poll() is None)
        with smtplib.SMTP(outside, port, timeout=10, source_address=(outside, 0)) as s:
            s.ehlo("outsider.test")
            assert s.mail("spammer@outsider.test")[0] == 250
            code, text = s.rcpt("victim@example.test")
            assert (code, text.decode()) == (replies.RELAY_DENIED.code, str(replies.RELAY_DENIED)[4:])
            with pytest.raises(smtplib.SMTPException):
                s.sendmail("spammer@outsider.test", ["victim@example.test"], message("open-relay"))
    finally:
        proc.terminate()
        proc.wait(15)
    assert list(LedgerReader(tmp_path / "ledger").records([Kind.SUT_ACCEPTED])) == []


REMOTE_TARGET = """name: remote-target
duration: 10s
load: {shape: {kind: steady, rate: 5}}
target: {kind: smtp, endpoints: ["192.0.2.10:25"]}
"""


def mailstorm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest.mark.parametrize(("in_file", "flag"), [(False, False), (True, False), (False, True)])
def test_a_remote_load_target_needs_the_file_and_the_flag(tmp_path, in_file, flag):
    """`mailstorm run` refuses a non-loopback load target, in one line naming it, before it makes a run
    directory or starts anything, unless the file says allow_remote: true AND --allow-remote is given."""
    path = tmp_path / "remote.yaml"
    path.write_text(REMOTE_TARGET + ("allow_remote: true\n" if in_file else ""))
    out = mailstorm("run", str(path), "--out", str(tmp_path / "runs"), *(["--allow-remote"] if flag else []))
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.splitlines()
    assert f"{path}:4: target.endpoints[0]: " in line and "192.0.2.10" in line and "loopback" in line
    assert not (tmp_path / "runs").exists()


def test_a_remote_load_target_allowed_twice_validates(tmp_path):
    """With allow_remote: true in the file and --allow-remote, the same scenario validates."""
    path = tmp_path / "remote.yaml"
    path.write_text(REMOTE_TARGET + "allow_remote: true\n")
    out = mailstorm("validate", str(path), "--allow-remote")
    assert out.returncode == 0, out.stderr
