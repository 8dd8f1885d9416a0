"""The chaos proxy: each toxic measured through real sockets (an SMTP server, an echo server), live
switching through the function API and the HTTP control, seeded toxicity, and nothing left behind."""

from __future__ import annotations

import contextlib
import json
import smtplib
import socket
import socketserver
import statistics
import threading
import time
import urllib.error
import urllib.request

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink

from mailstorm.errors import ConfigError, UserError
from mailstorm.harness.chaosproxy.proxy import ChaosProxy
from mailstorm.harness.chaosproxy.spec import parse_toxic
from mailstorm.ledger import Kind, LedgerReader, LedgerWriter
from mailstorm.ports import free_port, port_open


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def _echo_server():
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address
    server.shutdown()
    server.server_close()


@pytest.fixture
def echo():
    with _echo_server() as address:
        yield address


@pytest.fixture
def smtp_server():
    port = free_port()
    ctl = Controller(Sink(), hostname="127.0.0.1", port=port)
    ctl.start()
    yield ("127.0.0.1", port)
    ctl.stop()


def _noop_rtts(host: str, port: int, n: int) -> list[float]:
    """Round trips of NOOP on one SMTP session, in ms."""
    with smtplib.SMTP(host, port, timeout=10) as s:
        s.ehlo("client.test")
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            code, _ = s.noop()
            out.append((time.perf_counter() - t0) * 1000)
            assert code == 250
    return out


def test_latency_p50_end_to_end_within_2ms_of_setting(smtp_server):
    """A 25 ms downstream latency toxic adds 25 ms (+/- 2) to the median SMTP round trip, measured against
    the same proxy without the toxic."""
    setting = 25.0
    with ChaosProxy(smtp_server, seed=1) as proxy:
        for _attempt in range(3):  # a shared 2-core machine: retry a noisy measurement, same claim
            base = statistics.median(_noop_rtts(proxy.host, proxy.port, 40))
            name = proxy.add_toxic({"type": "latency", "ms": setting})
            slow = statistics.median(_noop_rtts(proxy.host, proxy.port, 40))
            proxy.remove_toxic(name)
            added = slow - base
            if abs(added - setting) <= 2.0:
                break
        assert abs(added - setting) <= 2.0, f"added {added:.2f} ms for a {setting} ms setting"


def test_latency_jitter_spreads_round_trips_around_the_setting(echo):
    """Latency 20 ms with 10 ms jitter: round trips spread over roughly 10..30 ms with a median near 20."""
    with ChaosProxy(echo, seed=3) as proxy:
        proxy.add_toxic({"type": "latency", "ms": 20, "jitter_ms": 10})
        rtts = []
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
            for _ in range(60):
                t0 = time.perf_counter()
                s.sendall(b"x")
                assert s.recv(10) == b"x"
                rtts.append((time.perf_counter() - t0) * 1000)
    assert min(rtts) >= 9.0 and max(rtts) <= 40.0
    assert max(rtts) - min(rtts) >= 8.0, "jitter did not spread the round trips"
    assert 15.0 <= statistics.median(rtts) <= 26.0


def test_reset_is_seen_by_the_client_as_a_connection_error(smtp_server):
    """With a reset toxic, an SMTP client gets a connection reset (ECONNRESET), not a reply."""
    with ChaosProxy(smtp_server) as proxy:
        proxy.add_toxic({"type": "reset"})
        with (
            socket.create_connection((proxy.host, proxy.port), timeout=5) as s,
            pytest.raises(ConnectionResetError),
        ):
            s.sendall(b"EHLO client.test\r\n")
            s.recv(100)
        with pytest.raises(smtplib.SMTPServerDisconnected, match="reset by peer"):
            smtplib.SMTP(proxy.host, proxy.port, timeout=5)
        assert proxy.counters()["resets"] >= 1


def test_reset_after_timeout_lets_the_session_start_first(smtp_server):
    """reset with timeout_ms: the greeting and EHLO pass, a command after the timeout is reset."""
    with ChaosProxy(smtp_server) as proxy:
        proxy.add_toxic({"type": "reset", "timeout_ms": 300})
        s = smtplib.SMTP(proxy.host, proxy.port, timeout=5)
        assert s.ehlo("client.test")[0] == 250
        deadline = time.monotonic() + 0.35
        while time.monotonic() < deadline:
            time.sleep(0.05)  # let the toxic's timeout pass (the behaviour under test is time-based)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
        s.close()


def test_blackhole_is_seen_by_the_client_as_a_timeout(smtp_server):
    """With a blackhole, the connection is accepted but no greeting ever comes: the client times out."""
    with ChaosProxy(smtp_server) as proxy:
        proxy.add_toxic({"type": "blackhole"})
        with socket.create_connection((proxy.host, proxy.port), timeout=0.5) as s:
            s.sendall(b"EHLO client.test\r\n")
            with pytest.raises(TimeoutError):
                s.recv(100)
        with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
            smtplib.SMTP(proxy.host, proxy.port, timeout=0.5)


def test_blackhole_close_after_closes_quietly(echo):
    """close_after_s ends a blackholed connection with EOF after that time."""
    with ChaosProxy(echo) as proxy:
        proxy.add_toxic({"type": "blackhole", "close_after_s": 0.2})
        with socket.create_connection((proxy.host, proxy.port), timeout=3) as s:
            s.sendall(b"hello")
            t0 = time.monotonic()
            assert s.recv(100) == b""
            assert 0.15 <= time.monotonic() - t0 < 2.0


def test_bandwidth_limits_throughput(echo):
    """200 kB through a 400 KB/s downstream limit take about half a second, and arrive intact."""
    payload = bytes(range(256)) * 800
    with ChaosProxy(echo) as proxy:
        proxy.add_toxic({"type": "bandwidth", "rate_kbps": 400})
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
            t0 = time.monotonic()
            s.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += s.recv(65536)
            elapsed = time.monotonic() - t0
    assert got == payload
    assert 0.4 <= elapsed <= 1.5, elapsed


def test_slicer_delivers_small_pieces_intact(echo):
    """The slicer cuts a chunk into ~10-byte pieces with pauses between: the receiver sees many small
    reads and the bytes unchanged."""
    payload = b"MAIL FROM:<a@b.test> SIZE=1000\r\n" * 8
    with ChaosProxy(echo, seed=5) as proxy:
        proxy.add_toxic({"type": "slicer", "average_size": 10, "size_variation": 4, "delay_us": 2000})
        with socket.create_connection((proxy.host, proxy.port), timeout=10) as s:
            s.sendall(payload)
            reads, got = [], b""
            while len(got) < len(payload):
                piece = s.recv(65536)
                reads.append(len(piece))
                got += piece
    assert got == payload
    assert len(reads) >= len(payload) // 14 // 2
    assert max(reads) <= 28  # a piece is at most 14 bytes; two may coalesce in the socket buffer


def test_toxicity_is_seeded(echo):
    """toxicity 0.5 resets the same connections for the same seed, and about half of them."""

    def pattern(seed: int) -> list[bool]:
        out = []
        with ChaosProxy(echo, seed=seed) as proxy:
            proxy.add_toxic({"type": "reset", "toxicity": 0.5})
            for _ in range(30):
                with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
                    try:
                        s.sendall(b"ping")
                        out.append(s.recv(10) != b"ping")
                    except ConnectionResetError:
                        out.append(True)
        return out

    a, b = pattern(11), pattern(11)
    assert a == b
    assert 5 <= sum(a) <= 25


def test_toxics_switch_live_on_an_open_connection(echo):
    """Adding and removing a latency toxic changes the round trip of an already-open connection."""

    def rtt(s: socket.socket) -> float:
        t0 = time.perf_counter()
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        return (time.perf_counter() - t0) * 1000

    with ChaosProxy(echo) as proxy, socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
        assert statistics.median(rtt(s) for _ in range(5)) < 15
        proxy.add_toxic({"type": "latency", "ms": 40, "name": "slow"})
        assert [t["name"] for t in proxy.toxics()] == ["slow"]
        assert statistics.median(rtt(s) for _ in range(5)) >= 38
        proxy.remove_toxic("slow")
        assert statistics.median(rtt(s) for _ in range(5)) < 15


def test_bad_toxics_are_refused_naming_the_field(echo):
    """A bad spec, a duplicate name or an unknown toxic name raise one clear error."""
    with pytest.raises(ConfigError, match="ms"):
        parse_toxic({"type": "latency", "ms": -1})
    with pytest.raises(ConfigError, match="unknown"):
        parse_toxic({"type": "teleport"})
    with pytest.raises(ConfigError, match="rate_kbps"):
        parse_toxic({"type": "bandwidth"})
    with ChaosProxy(echo) as proxy:
        proxy.add_toxic({"type": "latency", "ms": 1, "name": "slow"})
        with pytest.raises(ConfigError, match="already active"):
            proxy.add_toxic({"type": "latency", "ms": 2, "name": "slow"})
        with pytest.raises(UserError, match="nope"):
            proxy.remove_toxic("nope")


def test_unnamed_toxics_of_one_type_get_their_own_names(echo):
    """Two unnamed latency toxics (overlapping timeline windows) both apply, under distinct names."""
    with ChaosProxy(echo) as proxy:
        first = proxy.add_toxic({"type": "latency", "ms": 15})
        second = proxy.add_toxic({"type": "latency", "ms": 15})
        assert (first, second) == ("latency", "latency-2")
        with socket.create_connection((proxy.host, proxy.port), timeout=5) as s:
            t0 = time.perf_counter()
            s.sendall(b"x")
            assert s.recv(10) == b"x"
            assert (time.perf_counter() - t0) * 1000 >= 29
        proxy.remove_toxic(first)
        assert [t["name"] for t in proxy.toxics()] == ["latency-2"]


def test_http_control_mirrors_the_function_api(echo):
    """The loopback HTTP control adds, lists and removes toxics, and answers 400 naming the field."""

    def call(method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        req = urllib.request.Request(
            proxy.control_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    with ChaosProxy(echo, control_port=0) as proxy:
        assert call("GET", "/health")[1]["listen"] == f"{proxy.host}:{proxy.port}"
        assert call("POST", "/toxics", {"type": "latency", "ms": 5, "name": "l"}) == (201, {"name": "l"})
        status, listed = call("GET", "/toxics")
        assert status == 200 and listed[0]["ms"] == 5.0
        status, err = call("POST", "/toxics", {"type": "latency", "ms": "slow"})
        assert status == 400 and "ms" in err["error"]
        assert call("DELETE", "/toxics/l")[0] == 204
        assert call("DELETE", "/toxics/l")[0] == 404
        assert call("GET", "/toxics") == (200, [])


def test_upstream_down_is_a_connection_error_for_the_client():
    """When the upstream refuses, the proxy resets the client's connection and counts it.

    The reset can reach the client while it is still inside connect() (ECONNRESET) or after,
    while it waits for the greeting (smtplib's SMTPServerDisconnected): both are the same
    event seen at two moments, and which one a run sees depends on scheduling.
    """
    dead = free_port()
    with ChaosProxy(("127.0.0.1", dead)) as proxy:
        with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionResetError)):
            smtplib.SMTP(proxy.host, proxy.port, timeout=5)
        assert proxy.counters()["upstream_failed"] == 1


def test_stop_leaves_nothing_behind(echo):
    """stop() closes the listener, the control port and open client connections, and ends the thread."""
    proxy = ChaosProxy(echo, control_port=0).start()
    control_port = int(proxy.control_url.rsplit(":", 1)[1])
    s = socket.create_connection((proxy.host, proxy.port), timeout=5)
    s.sendall(b"x")
    assert s.recv(10) == b"x"
    proxy.stop()
    assert not proxy.alive()
    assert not port_open(proxy.host, proxy.port)
    assert not port_open("127.0.0.1", control_port)
    assert s.recv(10) == b""
    s.close()
    assert not any(t.name == "chaosproxy" for t in threading.enumerate())


@pytest.fixture
def echo2():
    """A second echo server, for a proxy with two paths."""
    with _echo_server() as address:
        yield address


def _rtt_ms(address: tuple[str, int]) -> float:
    with socket.create_connection(address, timeout=5) as s:
        t0 = time.perf_counter()
        s.sendall(b"x")
        assert s.recv(10) == b"x"
        return (time.perf_counter() - t0) * 1000


def test_one_proxy_fronts_several_paths_and_on_narrows_a_toxic(echo, echo2):
    """Each path listens on its own port to its own upstream; a toxic acts on every path unless its
    ``on`` names some of them."""
    with ChaosProxy({"smtp": echo, "http": echo2}) as proxy:
        smtp, http = proxy.address("smtp"), proxy.address("http")
        assert smtp != http and proxy.paths == ("smtp", "http") and (proxy.host, proxy.port) == smtp
        proxy.add_toxic({"type": "latency", "ms": 40, "name": "everywhere"})
        assert _rtt_ms(smtp) >= 38 and _rtt_ms(http) >= 38
        proxy.remove_toxic("everywhere")
        proxy.add_toxic({"type": "latency", "ms": 40, "name": "http-only", "on": ["http"]})
        assert _rtt_ms(http) >= 38 and _rtt_ms(smtp) < 30


def test_toxic_actions_and_upstream_failures_are_in_the_ledger(echo, tmp_path):
    """With a ledger, the first time a toxic acts on a connection is one proxy.acted record naming the
    toxic, its path and action; a toxic that sees no traffic writes nothing; an unreachable upstream is a
    proxy.upstream.failed record."""
    dead = free_port()
    ledger = LedgerWriter(tmp_path, "proxy")
    with ledger, ChaosProxy({"smtp": echo, "http": ("127.0.0.1", dead)}, ledger=ledger) as proxy:
        proxy.add_toxic({"type": "latency", "ms": 5, "name": "slow", "on": ["smtp"]})
        proxy.add_toxic({"type": "reset", "name": "idle", "on": ["webhooks"]})
        with socket.create_connection(proxy.address("smtp"), timeout=5) as s:
            for _ in range(3):
                s.sendall(b"x")
                assert s.recv(10) == b"x"
        # The proxy resets the client when its upstream refuses: the reset may reach the client while it
        # is still inside connect() (ECONNRESET) or after it (recv), depending on scheduling.
        with contextlib.suppress(OSError), socket.create_connection(proxy.address("http"), timeout=5) as s:
            assert s.recv(10) == b""
        assert proxy.counters()["upstream_failed"] == 1
    acted = list(LedgerReader(tmp_path).records([Kind.PROXY_ACTED]))
    assert [(r["toxic"], r["path"], r["action"], r["direction"]) for r in acted] == [
        ("slow", "smtp", "delay", "downstream")
    ]
    (failed,) = LedgerReader(tmp_path).records([Kind.PROXY_UPSTREAM_FAILED])
    assert failed["path"] == "http" and "refused" in failed["error"].lower()
