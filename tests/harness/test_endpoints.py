"""The ``smtp`` and ``http`` targets: address guard, reachability checks naming the endpoint, STARTTLS/AUTH
checks, and the Endpoint objects the load gets."""

from __future__ import annotations

import http.server
import threading

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import ValidationError

from mailstorm.errors import TargetNotAllowed, UserError
from mailstorm.harness.targets.base import TARGETS, Endpoint, TargetContext
from mailstorm.harness.targets.endpoints import HttpTarget, HttpTargetSpec, SmtpTarget, SmtpTargetSpec
from mailstorm.ports import free_port

HOST = "127.0.0.1"


class _Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"app", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers the 535 itself


@pytest.fixture
def smtp_server():
    """A real aiosmtpd server that offers AUTH (without TLS, loopback only) and accepts app/s3cret."""
    ctl = Controller(
        _Sink(), hostname=HOST, port=free_port(), authenticator=_authenticator, auth_require_tls=False
    )
    ctl.start()
    yield ctl
    ctl.stop()


@pytest.fixture
def http_server():
    server = http.server.ThreadingHTTPServer((HOST, 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def ctx(tmp_path, allow_remote: bool = False) -> TargetContext:
    return TargetContext(
        run_dir=tmp_path,
        ledger_dir=tmp_path / "ledger",
        seed=0,
        esp_smtp=(HOST, 1),
        allow_remote=allow_remote,
    )


def test_both_kinds_are_registered_with_their_spec_models():
    """Scenario files name these targets as kind: smtp / kind: http."""
    assert TARGETS["smtp"].spec_model is SmtpTargetSpec
    assert TARGETS["http"].spec_model is HttpTargetSpec


def test_smtp_target_returns_one_endpoint_per_reachable_address(smtp_server, tmp_path):
    """Two live addresses give two SMTP endpoints in the order written."""
    spec = SmtpTargetSpec(endpoints=(f"{HOST}:{smtp_server.port}", f"localhost:{smtp_server.port}"))
    target = SmtpTarget(spec)
    assert target.start(ctx(tmp_path)) == [
        Endpoint("smtp", HOST, smtp_server.port),
        Endpoint("smtp", "localhost", smtp_server.port),
    ]
    target.stop()


def test_smtp_target_names_the_unreachable_endpoint(smtp_server, tmp_path):
    """With one live and one closed port, the error is one line naming the second endpoint."""
    closed = free_port()
    spec = SmtpTargetSpec(endpoints=(f"{HOST}:{smtp_server.port}", f"{HOST}:{closed}"))
    with pytest.raises(UserError, match=rf"^target\.endpoints\[1\] {HOST}:{closed} is not reachable") as err:
        SmtpTarget(spec).start(ctx(tmp_path))
    assert "\n" not in str(err.value)


def test_smtp_target_refuses_a_non_loopback_host_before_connecting(tmp_path):
    """A non-loopback endpoint is refused unless the run allows remote hosts."""
    spec = SmtpTargetSpec(endpoints=("127.0.0.1:25", "203.0.113.7:2525"))
    with pytest.raises(TargetNotAllowed, match=r"target\.endpoints\[1\] '203\.0\.113\.7' is not a loopback"):
        SmtpTarget(spec).start(ctx(tmp_path))


def test_smtp_target_checks_credentials_and_starttls(smtp_server, tmp_path):
    """Right credentials pass; wrong ones fail naming the user; asking STARTTLS of a server without it
    fails."""
    where = f"{HOST}:{smtp_server.port}"
    good = SmtpTargetSpec(endpoints=(where,), auth={"user": "app", "password": "s3cret"})
    assert SmtpTarget(good).start(ctx(tmp_path)) == [Endpoint("smtp", HOST, smtp_server.port)]
    bad = SmtpTargetSpec(endpoints=(where,), auth={"user": "app", "password": "wrong"})
    with pytest.raises(UserError, match=r"refused the credentials of user 'app': 535"):
        SmtpTarget(bad).start(ctx(tmp_path))
    tls = SmtpTargetSpec(endpoints=(where,), starttls=True)
    with pytest.raises(UserError, match=r"does not offer STARTTLS"):
        SmtpTarget(tls).start(ctx(tmp_path))


@pytest.mark.parametrize("bad", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:http", ":25"])
def test_smtp_spec_rejects_a_malformed_endpoint(bad):
    """Each endpoint must be HOST:PORT; the error quotes the bad value."""
    with pytest.raises(ValidationError, match="is not HOST:PORT"):
        SmtpTargetSpec(endpoints=(bad,))


def test_smtp_spec_needs_at_least_one_endpoint_and_no_unknown_keys():
    """An empty list and an unknown key are both validation errors."""
    with pytest.raises(ValidationError, match="endpoints"):
        SmtpTargetSpec(endpoints=())
    with pytest.raises(ValidationError, match="hosts"):
        SmtpTargetSpec(endpoints=("127.0.0.1:25",), hosts=["x"])


def test_http_target_returns_url_endpoints_and_names_the_unreachable_one(http_server, tmp_path):
    """Live URLs become HTTP endpoints carrying the URL; a closed port is named by index and URL."""
    port = http_server.server_address[1]
    live = f"http://{HOST}:{port}/v3/mail/send"
    spec = HttpTargetSpec(endpoints=(live,))
    assert HttpTarget(spec).start(ctx(tmp_path)) == [Endpoint("http", HOST, port, url=live)]
    dead = f"http://{HOST}:{free_port()}/send"
    with pytest.raises(UserError, match=rf"target\.endpoints\[1\] {dead} is not reachable"):
        HttpTarget(HttpTargetSpec(endpoints=(live, dead))).start(ctx(tmp_path))


def test_http_target_refuses_a_non_loopback_url_and_a_malformed_one(tmp_path):
    """A remote URL needs allow_remote; a URL without scheme or host is a validation error."""
    with pytest.raises(TargetNotAllowed, match=r"target\.endpoints\[0\] '198\.51\.100\.4'"):
        HttpTarget(HttpTargetSpec(endpoints=("http://198.51.100.4:8080/send",))).start(ctx(tmp_path))
    with pytest.raises(ValidationError, match="is not an http"):
        HttpTargetSpec(endpoints=("ftp://127.0.0.1/x",))
