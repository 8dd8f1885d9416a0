"""TLS and AUTH on the fake ESP's SMTP listener, with real clients configured as in production: smtplib
and aiosmtplib over STARTTLS and implicit TLS trusting only the CA file the ESP wrote, swaks with --tls
and --auth, Django's SMTP backend with EMAIL_USE_TLS. Then what production requires (530 before STARTTLS
and before AUTH, 535 for a wrong password in the profile's words), the ledger (the AUTH user's name, the
TLS version; never a password), the auth fault phase, and every TLS fault as smtplib sees it.

One ESP per mode for the module (STARTTLS with --require-tls, implicit), both with credentials and the
SES profile's texts, reset between tests.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
import subprocess

import aiosmtplib
import pytest

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.tls import WRONG_HOST
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.replies import SES_AUTH_FAILED, SES_AUTH_REQUIRED, SES_TLS_REQUIRED
from tests.fake_esp.clients import SWAKS, message, needs_swaks, wait_until

USER, PASSWORD = "AKIAFAKEESPUSER", "smtp-Pass/word+1"
TOKEN = "pm-server-token-0001"  # Postmark's SMTP: the token is user and password


def start(tmp_path_factory: pytest.TempPathFactory, mode: str) -> EspProcess:
    d = tmp_path_factory.mktemp(f"esp-{mode}")
    return EspProcess(
        d / "ledger",
        seed=13,
        log_path=d / "esp.log",
        profile="ses",
        tls=mode,
        require_tls=mode == "starttls",
        auth=[f"{USER}:{PASSWORD}", f"{TOKEN}:{TOKEN}"],
        extra_args=["--rate", "1000"],  # the SES profile's sandbox rate (1/s) is not under test here
    ).start()


def _module_esp(mode: str):
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory):
        esp = start(tmp_path_factory, mode)
        yield esp
        esp.stop()
        assert "Traceback" not in esp.log_path.read_text(), "the fake ESP logged a traceback"

    return fixture


starttls_esp = _module_esp("starttls")
implicit_esp = _module_esp("implicit")


@pytest.fixture(params=["starttls", "implicit"])
def esp(request: pytest.FixtureRequest):
    proc: EspProcess = request.getfixturevalue(f"{request.param}_esp")
    proc.control.reset()
    yield proc
    proc.control.reset()


def trusting(esp: EspProcess) -> ssl.SSLContext:
    """A client context as production has one, trusting only the ESP's CA (hostname checked)."""
    return ssl.create_default_context(cafile=str(esp.ca_path))


def connect(esp: EspProcess, *, timeout: float = 10) -> smtplib.SMTP:
    """smtplib as an application configures it: STARTTLS on the submission port, or SMTP_SSL on 465."""
    if esp.tls == "implicit":
        s = smtplib.SMTP_SSL("127.0.0.1", esp.smtp_port, timeout=timeout, context=trusting(esp))
        s.ehlo("client.test")
        return s
    s = smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=timeout)
    s.ehlo("client.test")
    s.starttls(context=trusting(esp))
    s.ehlo("client.test")
    return s


def records(esp: EspProcess, kind: Kind) -> list[dict]:
    return list(LedgerReader(esp.ledger_dir).records([kind]))


def kept(esp: EspProcess, cid: str) -> list[dict]:
    return [r for r in records(esp, Kind.ESP_ACCEPTED) if r.get("id") == cid]


def replied(esp: EspProcess, fault: str) -> list[dict]:
    """The esp.replied records of ``fault``, once there is one: the client may give up on a handshake
    before the ESP has read its alert and written the record."""
    return wait_until(
        lambda: [r for r in records(esp, Kind.ESP_REPLIED) if r["fault"] == fault], 10, f"{fault} records"
    )


def ledger_text(esp: EspProcess) -> str:
    return "".join(p.read_text() for p in esp.ledger_dir.glob("*.jsonl"))


# -- real clients, production settings -------------------------------------------------------------------
def test_smtplib_sends_over_tls_with_auth_and_the_ledger_names_the_user(esp):
    """smtplib trusting the CA file: the handshake verifies (hostname 127.0.0.1 in the certificate), AUTH
    succeeds, the message is kept; the ledger has the user and the TLS version, never the password."""
    with connect(esp) as s:
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        s.login(USER, PASSWORD)
        s.sendmail("app@example.test", ["user@example.test"], message("tls-smtplib"))
    (rec,) = kept(esp, "tls-smtplib")
    assert rec["key"] == USER and rec["tls"] in ("TLSv1.2", "TLSv1.3")
    assert PASSWORD not in ledger_text(esp)


def test_aiosmtplib_sends_over_tls_with_auth(esp):
    """aiosmtplib (start_tls / use_tls, cert_bundle = the CA file) sends and is kept."""

    async def send() -> None:
        implicit = esp.tls == "implicit"
        await aiosmtplib.send(
            message("tls-aiosmtplib"),
            sender="app@example.test",
            recipients=["user@example.test"],
            hostname="127.0.0.1",
            port=esp.smtp_port,
            use_tls=implicit,
            start_tls=not implicit,
            cert_bundle=str(esp.ca_path),
            username=USER,
            password=PASSWORD,
            timeout=10,
        )

    asyncio.run(send())
    assert kept(esp, "tls-aiosmtplib")[0]["key"] == USER


@needs_swaks
def test_swaks_sends_with_tls_and_auth(esp):
    """swaks --tls (or --tls-on-connect) --tls-verify --tls-ca-path CA --auth LOGIN: exit 0, kept."""
    tls = ["--tls-on-connect"] if esp.tls == "implicit" else ["--tls"]
    cmd = [
        SWAKS or "swaks", "--server", f"127.0.0.1:{esp.smtp_port}", "--from", "app@example.test",
        "--to", "user@example.test", "--helo", "client.test", "--header", "X-Mailstorm-Id: tls-swaks",
        *tls, "--tls-verify", "--tls-ca-path", str(esp.ca_path),
        "--auth", "LOGIN", "--auth-user", USER, "--auth-password", PASSWORD, "--timeout", "10",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "TLS started" in out.stdout and "235 " in out.stdout
    assert kept(esp, "tls-swaks")[0]["key"] == USER


def test_django_smtp_backend_with_email_use_tls(starttls_esp, monkeypatch):
    """Django's SMTP backend as production sets it (EMAIL_USE_TLS, EMAIL_HOST_USER/PASSWORD), trusting
    the CA through SSL_CERT_FILE (Django builds ssl.create_default_context()): the mail is kept."""
    from django.core.mail import EmailMessage, get_connection
    from django.test.utils import override_settings

    from tests.fake_esp.django_setup import configure

    configure()
    esp = starttls_esp
    esp.control.reset()
    monkeypatch.setenv("SSL_CERT_FILE", str(esp.ca_path))
    settings = {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "127.0.0.1",
        "EMAIL_PORT": esp.smtp_port,
        "EMAIL_USE_TLS": True,
        "EMAIL_HOST_USER": USER,
        "EMAIL_HOST_PASSWORD": PASSWORD,
        "EMAIL_TIMEOUT": 10,
    }
    with override_settings(**settings), get_connection() as conn:
        sent = EmailMessage(
            "s", "b", "app@example.test", ["user@example.test"], headers={"X-Mailstorm-Id": "tls-django"},
            connection=conn,
        ).send()  # fmt: skip
    assert sent == 1
    assert kept(esp, "tls-django")[0]["key"] == USER


# -- what production requires ---------------------------------------------------------------------------
def test_mail_and_auth_before_starttls_get_530_and_ehlo_hides_auth(starttls_esp):
    """--require-tls: EHLO offers STARTTLS but not AUTH; MAIL and AUTH before STARTTLS get SES's 530
    "Must issue a STARTTLS command first"; each refusal is an esp.replied record."""
    esp = starttls_esp
    esp.control.reset()
    with smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls") and not s.has_extn("auth")
        assert s.docmd("MAIL FROM:<app@example.test>") == (530, SES_TLS_REQUIRED.text.encode())
        assert s.docmd("AUTH PLAIN AGEAYg==")[0] == 530
    refused = [r for r in records(esp, Kind.ESP_REPLIED) if r["code"] == 530]
    assert {r["phase"] for r in refused[-2:]} == {"mail", "auth"}


def test_mail_before_auth_gets_530_and_a_wrong_password_535(esp):
    """Credentials configured: MAIL before AUTH gets SES's 530 "Authentication required", a wrong
    password SES's 535 "Authentication Credentials Invalid"; the ledger's 535 names the user tried."""
    with connect(esp) as s:
        assert s.docmd("MAIL FROM:<app@example.test>") == (530, SES_AUTH_REQUIRED.text.encode())
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(USER, "not-the-password")
        assert (err.value.smtp_code, err.value.smtp_error) == (535, SES_AUTH_FAILED.text.encode())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("AKIAUNKNOWN", PASSWORD)
    failed = [r for r in records(esp, Kind.ESP_REPLIED) if r["phase"] == "auth" and r["code"] == 535]
    assert {r["user"] for r in failed} >= {USER, "AKIAUNKNOWN"}
    assert "not-the-password" not in ledger_text(esp)


def test_a_user_that_is_its_own_password_is_recorded_as_a_fingerprint(esp):
    """Postmark's SMTP login is the server token as user and password: the ledger records a fingerprint
    of it, so the token appears nowhere in the ledger."""
    with connect(esp) as s:
        s.login(TOKEN, TOKEN)
        s.sendmail("app@example.test", ["user@example.test"], message("tls-token"))
    assert kept(esp, "tls-token")[0]["key"] == fingerprint(TOKEN)
    assert TOKEN not in ledger_text(esp)


@pytest.mark.parametrize("reply", ["454 4.7.0 Temporary authentication failure", "535 5.7.8 Try again"])
def test_auth_fault_phase_answers_at_auth_and_the_retry_passes(esp, reply):
    """A reply fault on phase auth (here for 1 s) answers AUTH with it; once it is gone, AUTH succeeds."""
    esp.control.add_fault({"name": "auth-down", "type": "reply", "phase": "auth", "reply": reply, "ttl": 1})
    with connect(esp) as s:
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(USER, PASSWORD)
        assert err.value.smtp_code == int(reply[:3])
    faults = [r for r in records(esp, Kind.ESP_FAULT) if r["fault"] == "auth-down"]
    assert faults and faults[-1]["phase"] == "auth"
    esp.control.remove_fault("auth-down")
    with connect(esp) as s:
        s.login(USER, PASSWORD)


# -- TLS faults, as smtplib sees them -------------------------------------------------------------------
def tls_fault(esp: EspProcess, mode: str) -> None:
    esp.control.add_fault({"name": f"tls-{mode}", "type": "tls", "mode": mode})


def handshake(esp: EspProcess) -> None:
    connect(esp).close()


def test_no_starttls_fault(starttls_esp):
    """no_starttls: EHLO lacks STARTTLS and smtplib's starttls() raises "STARTTLS extension not supported
    by server" (what Django reports); a STARTTLS sent anyway gets 454 4.7.0."""
    esp = starttls_esp
    esp.control.reset()
    tls_fault(esp, "no_starttls")
    with smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPNotSupportedError, match="STARTTLS extension not supported"):
            s.starttls(context=trusting(esp))
        assert s.docmd("STARTTLS")[0] == 454


def test_no_starttls_fault_on_an_implicit_port_speaks_plain_text(implicit_esp):
    """no_starttls on an implicit-TLS port: the session stays plain text, so the client's handshake
    fails (it reads an SMTP banner where a ServerHello should be)."""
    esp = implicit_esp
    esp.control.reset()
    tls_fault(esp, "no_starttls")
    with pytest.raises(ssl.SSLError):
        handshake(esp)


def test_handshake_failure_fault(esp):
    """handshake_failure: the client's ClientHello is answered by a fatal handshake_failure alert."""
    tls_fault(esp, "handshake_failure")
    with pytest.raises(ssl.SSLError, match=r"HANDSHAKE_FAILURE|handshake failure"):
        handshake(esp)
    cuts = replied(esp, "tls-handshake_failure")
    assert cuts[-1]["phase"] == "tls" and cuts[-1]["code"] is None


def test_expired_certificate_fault(esp):
    """expired_cert: the certificate (signed by the CA the client trusts) is expired; the client refuses
    it and the ESP records the failed handshake with the reason."""
    tls_fault(esp, "expired_cert")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(esp)
    failed = replied(esp, "tls-expired_cert")
    assert failed[-1]["text"].startswith("TLS handshake failed") and "certificate" in failed[-1]["text"]


def test_wrong_host_certificate_fault(esp):
    """wrong_host: the certificate names another host; the client's hostname check refuses it."""
    tls_fault(esp, "wrong_host")
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch, certificate is not valid"):
        handshake(esp)
    # Checked against the right name, the same certificate verifies: it is a host mismatch, nothing else.
    esp.control.reset()
    tls_fault(esp, "wrong_host")
    ctx = trusting(esp)
    ctx.check_hostname = False
    if esp.tls == "implicit":
        with smtplib.SMTP_SSL("127.0.0.1", esp.smtp_port, timeout=10, context=ctx) as s:
            cert = s.sock.getpeercert()
    else:
        with smtplib.SMTP("127.0.0.1", esp.smtp_port, timeout=10) as s:
            s.starttls(context=ctx)
            cert = s.sock.getpeercert()
    assert ("DNS", WRONG_HOST) in cert["subjectAltName"]


def test_tls_cut_mid_data_fault(esp):
    """cut_mid_data: the 354 comes, the first bytes of the message go, then the connection is cut without
    close_notify; smtplib sees the server disconnect and the message is not kept."""
    tls_fault(esp, "cut_mid_data")
    with connect(esp) as s:
        s.login(USER, PASSWORD)
        with pytest.raises((smtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionError)):
            s.sendmail("app@example.test", ["user@example.test"], message("tls-cut", size=20_000))
    assert kept(esp, "tls-cut") == []
    assert replied(esp, "tls-cut_mid_data")[-1]["phase"] == "data"


def test_after_a_tls_fault_a_clean_client_is_served(esp):
    """Faults removed, the next session is served as before (nothing of the fault outlives it)."""
    for mode in ("handshake_failure", "expired_cert"):
        tls_fault(esp, mode)
        with pytest.raises(ssl.SSLError):
            handshake(esp)
        esp.control.reset()
    with connect(esp) as s:
        s.login(USER, PASSWORD)
        s.sendmail("app@example.test", ["user@example.test"], message("tls-after"))
    assert len(kept(esp, "tls-after")) == 1


# -- several workers, one certificate ---------------------------------------------------------------------
def test_two_workers_serve_the_one_certificate(tmp_path):
    """--processes 2 with TLS: the CA is made once (in the parent) and every worker's handshake verifies
    against it; ten connections (spread over both workers by SO_REUSEPORT) all send."""
    with EspProcess(
        tmp_path / "ledger", processes=2, log_path=tmp_path / "esp.log", tls="implicit", auth=["u:p"]
    ) as esp:
        for i in range(10):
            with connect(esp) as s:
                s.login("u", "p")
                s.sendmail("a@example.test", ["b@example.test"], message(f"two-{i}"))
    sources = {r["src"] for r in LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED])}
    assert len(list(LedgerReader(tmp_path / "ledger").records([Kind.ESP_ACCEPTED]))) == 10
    assert sources <= {"esp-smtp-0", "esp-smtp-1"}


def test_a_restarted_esp_serves_the_same_ca(tmp_path):
    """A fake ESP started again on the same --tls-ca (an ESP crash and restart on a run's timeline) keeps
    its CA and certificates: a client that loaded the CA file before still verifies it."""
    first = EspProcess(tmp_path / "ledger", log_path=tmp_path / "esp.log", tls="starttls").start()
    ctx = trusting(first)  # loaded once, as a running SUT loaded it
    ca = first.ca_path.read_bytes()
    first.kill()
    again = EspProcess(
        tmp_path / "ledger", log_path=tmp_path / "esp.log", tls="starttls", smtp_port=first.smtp_port
    ).start()
    try:
        assert again.ca_path.read_bytes() == ca
        with smtplib.SMTP("127.0.0.1", again.smtp_port, timeout=10) as s:
            s.starttls(context=ctx)
            s.sendmail("a@example.test", ["b@example.test"], message("restart-1"))
    finally:
        again.stop()


def test_an_outage_cuts_a_connection_still_in_its_handshake(implicit_esp):
    """A client that opened an implicit-TLS connection and sent nothing yet is cut by an outage in refuse
    mode like any session (it does not hold on until the handshake timeout)."""
    esp = implicit_esp
    esp.control.reset()
    with socket.create_connection(("127.0.0.1", esp.smtp_port), timeout=10) as sock:
        wait_until(lambda: esp.control.counters()["open_sessions"] >= 1, 10, "the session to open")
        esp.control.add_fault({"name": "down", "type": "outage", "duration_s": 1, "mode": "refuse"})
        try:
            assert sock.recv(1) == b""
        except ConnectionResetError:
            pass  # cut with an RST: as good
    wait_until(lambda: esp.control.counters()["open_sessions"] == 0, 10, "the session to be gone")
    wait_until(lambda: not esp.control.faults(), 10, "the outage to end")
