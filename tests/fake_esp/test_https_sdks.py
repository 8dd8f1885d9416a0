"""The official SDKs and django-anymail against the fake ESP's HTTP APIs over https, with API keys
checked, configured as in production: the only change from a production set-up is the base URL and the
one setting that makes the client trust the ESP's CA file (SSL_CERT_FILE for urllib and httpx,
REQUESTS_CA_BUNDLE for requests, AWS_CA_BUNDLE for boto3, ssl_ca_cert for the generated Elastic Email
client).

Each SDK sends with a known key (kept; the ledger's key is the credential's name, never the key) and
with an unknown one (that SDK's own error, with the ESP's status and body). anymail: every ESP backend
anymail has that the fake serves (Amazon SES, Brevo, Mailgun, Mailjet, Mandrill, Postmark, SendGrid,
MailerSend, Resend, SparkPost, Postal).
One fake ESP for the module (--tls starttls, https APIs, one credential per ESP).
"""

from __future__ import annotations

import uuid

import pytest
import requests
from botocore.exceptions import ClientError
from ElasticEmail.exceptions import ApiException as ElasticEmailError
from hubspot.marketing.transactional import ApiException as HubSpotError
from mailchimp_transactional.api_client import ApiClientError
from mailjet_rest.errors import MailjetApiError as MailjetError
from postmarker.exceptions import ClientError as PostmarkError
from python_http_client.exceptions import UnauthorizedError
from resend.exceptions import ResendError

from mailstorm.fake_esp.auth import fingerprint
from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.ledger import CORRELATION_HEADER, Kind, LedgerReader
from mailstorm.ports import free_port
from tests.fake_esp.esps.test_brevo import brevo_send
from tests.fake_esp.esps.test_elasticemail import elasticemail_send
from tests.fake_esp.esps.test_hubspot import hubspot_send
from tests.fake_esp.esps.test_mailersend import mailersend_send
from tests.fake_esp.esps.test_mailgun import DOMAIN, mailgun_send
from tests.fake_esp.esps.test_mailjet import mailjet_send
from tests.fake_esp.esps.test_mandrill import mandrill_send
from tests.fake_esp.esps.test_postmark import postmark_send
from tests.fake_esp.esps.test_resend import resend_send
from tests.fake_esp.esps.test_sendgrid import sendgrid_send
from tests.fake_esp.esps.test_sendpulse import sendpulse_client, sendpulse_send
from tests.fake_esp.esps.test_ses import ses_send
from tests.fake_esp.esps.test_sparkpost import sparkpost_send

# One credential per ESP, as each pairs its SMTP login with its API key (mailstorm.fake_esp.auth).
CREDENTIALS = {
    "sendgrid": ("apikey", "SG.test-key"),
    "ses": ("AKIDTESTKEY", "ses-smtp-password"),
    "mailgun": ("api", "mg-key"),
    "postmark": ("pm-token", "pm-token"),
    "mailjet": ("mj-key", "mj-secret"),
    "brevo": ("brevo-api", "xkeysib-test"),
    "elasticemail": ("elastic", "ee-key"),
    "sendpulse": ("sp-client", "sp-secret"),
    "mandrill": ("mandrill", "md-key"),
    "mailersend": ("ms-token", "ms-token"),
    "resend": ("re_test", "re_test"),
    "sparkpost": ("sp-key", "sp-key"),
    "postal": ("postal-key", "postal-key"),
    "hubspot": ("hs-token", "hs-token"),
}


@pytest.fixture(scope="module")
def esp_https(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp-https")
    with EspProcess(
        d / "ledger",
        http_port=free_port(),
        seed=21,
        log_path=d / "esp.log",
        tls="starttls",
        auth=[f"{user}:{password}" for user, password in CREDENTIALS.values()],
    ) as proc:
        yield proc
    assert "Traceback" not in (d / "esp.log").read_text(), "the fake ESP logged a traceback"


@pytest.fixture
def esp(esp_https: EspProcess, monkeypatch: pytest.MonkeyPatch):
    """The ESP, and this process's clients trusting its CA the way production clients are told to."""
    ca = str(esp_https.ca_path)
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE"):
        monkeypatch.setenv(var, ca)
    esp_https.control.reset()
    yield esp_https
    esp_https.control.reset()


def kept(esp: EspProcess, cid: str) -> dict:
    (rec,) = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r.get("id") == cid]
    return rec


def new_id() -> str:
    return f"run-https-{uuid.uuid4().hex[:12]}"


def name_of(api: str) -> str:
    user, password = CREDENTIALS[api]
    return fingerprint(user) if user == password else user


def test_the_apis_are_https_only(esp):
    """The HTTP APIs answer https; plain http to the same port gets no HTTP answer."""
    assert esp.http_url.startswith("https://")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(esp.http_url.replace("https://", "http://") + "/v3/mail/send", timeout=5)


SENDS = {
    "sendgrid": lambda esp, cid, key, tmp: sendgrid_send(esp, cid, key=key),
    "ses": lambda esp, cid, key, tmp: ses_send(esp, cid, key=key),
    "mailgun": lambda esp, cid, key, tmp: mailgun_send(esp, cid, key=key).raise_for_status(),
    "postmark": lambda esp, cid, key, tmp: postmark_send(esp, cid, key=key),
    "mailjet": lambda esp, cid, key, tmp: mailjet_send(esp, cid, key=key),
    "brevo": lambda esp, cid, key, tmp: brevo_send(esp, cid, key=key),
    "elasticemail": lambda esp, cid, key, tmp: elasticemail_send(esp, cid, key, ca=str(esp.ca_path)),
    "sendpulse": lambda esp, cid, key, tmp: sendpulse_send(sendpulse_client(esp, tmp, client_id=key), cid),
    "mandrill": lambda esp, cid, key, tmp: mandrill_send(esp, cid, key=key),
    "mailersend": lambda esp, cid, key, tmp: mailersend_send(esp, cid, key=key),
    "resend": lambda esp, cid, key, tmp: resend_send(esp, cid, key=key),
    "sparkpost": lambda esp, cid, key, tmp: sparkpost_send(esp, cid, key=key),
    "hubspot": lambda esp, cid, key, tmp: hubspot_send(esp, cid, key=key),
}
# Where each SDK's send carries the correlation id (postmark and mandrill: metadata; the rest: the id).
KEY_OF = {
    api: (user if api in ("ses", "mailjet", "sendpulse") else pw)
    for api, (user, pw) in CREDENTIALS.items()
    if api != "postal"  # Postal has no official SDK: anymail's backend below is its client
}


@pytest.mark.parametrize("api", list(SENDS))
def test_official_sdk_sends_over_https_with_a_known_key(esp, api, tmp_path):
    """Each official SDK, over https trusting the CA file, with its production key: accepted, and the
    ledger names the key's credential, never the key."""
    cid = new_id()
    SENDS[api](esp, cid, KEY_OF[api], tmp_path)
    rec = kept(esp, cid)
    assert (rec["api"], rec["key"]) == (api, name_of(api))
    text = "".join(p.read_text() for p in esp.ledger_dir.glob("*.jsonl"))
    assert CREDENTIALS[api][1] not in text  # the key (or secret) itself: never


def refusal(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, body text) of an SDK's error, whatever its shape."""
    if isinstance(exc, UnauthorizedError):
        return exc.status_code, exc.body.decode()
    if isinstance(exc, ClientError):
        meta = exc.response["ResponseMetadata"]
        return meta["HTTPStatusCode"], f"{exc.response['Error']['Code']}: {exc.response['Error']['Message']}"
    if isinstance(exc, PostmarkError):
        return exc.__cause__.response.status_code, exc.__cause__.response.text
    if isinstance(exc, MailjetError):
        return exc.status_code, exc.response_body
    if isinstance(exc, ElasticEmailError):
        return exc.status, exc.body
    if isinstance(exc, ApiClientError):
        return exc.status_code, str(exc.text)
    if isinstance(exc, HubSpotError):
        return exc.status, exc.body.decode() if isinstance(exc.body, bytes) else str(exc.body)
    if isinstance(exc, ResendError):
        return int(exc.code), exc.message
    if isinstance(exc, requests.HTTPError):
        return exc.response.status_code, exc.response.text
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", 0)
    return status, str(getattr(exc, "body", exc))


@pytest.mark.parametrize("api", [a for a in SENDS if a != "sendpulse"])
def test_official_sdk_with_an_unknown_key_gets_the_esps_own_refusal(esp, api, tmp_path):
    """An unknown key: each SDK raises its own error, with the ESP's status (401; SES 403) and the
    message of that ESP's profile; nothing is kept and the refusal is in the ledger by key name."""
    denied = load_profile(api).http.auth_failure
    cid = new_id()
    with pytest.raises(Exception) as err:  # each SDK has its own error type: checked below
        SENDS[api](esp, cid, "unknown-key-123", tmp_path)
    status, body = refusal(err.value)
    assert status == denied.status and denied.message.split(".")[0] in body, (status, body)
    assert not [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r.get("id") == cid]
    refused = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r.get("api") == api]
    assert refused[-1]["code"] == denied.status and refused[-1]["text"] == "unknown API key"


def test_sendpulse_unknown_client_gets_oauths_invalid_client(esp, tmp_path):
    """SendPulse: a token request with an unknown client_id/client_secret gets OAuth's 401 invalid_client
    (pysendpulse then has no token and raises)."""
    resp = requests.post(
        esp.http_url + "/oauth/access_token",
        json={"grant_type": "client_credentials", "client_id": "sp-client", "client_secret": "wrong"},
        timeout=10,
    )
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_client"


def test_postal_unknown_key_is_refused_in_its_200_envelope(esp):
    """Postal has no SDK: an unknown X-Server-API-Key gets Postal's own answer, HTTP 200 with status
    error and code InvalidServerAPIKey; nothing is kept and the refusal is in the ledger."""
    cid = new_id()
    body = {"to": ["u@example.test"], "from": "app@example.test", "plain_body": "b",
            "headers": {CORRELATION_HEADER: cid}}  # fmt: skip
    resp = requests.post(
        esp.http_url + "/api/v1/send/message", json=body, headers={"X-Server-API-Key": "nope"}, timeout=10
    )
    assert resp.status_code == 200 and resp.json()["status"] == "error"
    assert resp.json()["data"]["code"] == "InvalidServerAPIKey"
    assert not [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_ACCEPTED]) if r.get("id") == cid]
    refused = [
        r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r.get("api") == "postal"
    ]
    assert refused[-1]["text"] == "unknown API key"


# -- django-anymail -----------------------------------------------------------------------------------
def anymail_settings(esp: EspProcess, api: str) -> dict:
    base = esp.http_url
    user, password = CREDENTIALS[api]
    return {
        "amazon_ses": {
            "EMAIL_BACKEND": "anymail.backends.amazon_ses.EmailBackend",
            "ANYMAIL": {
                "AMAZON_SES_CLIENT_PARAMS": {
                    "endpoint_url": base,
                    "region_name": "us-east-1",
                    "aws_access_key_id": user,
                    "aws_secret_access_key": "secret",
                    "verify": str(esp.ca_path),
                    "config": {"retries": {"total_max_attempts": 1}},
                }
            },
        },
        "brevo": {"ANYMAIL": {"BREVO_API_KEY": password, "BREVO_API_URL": f"{base}/v3/"}},
        "mailgun": {
            "ANYMAIL": {
                "MAILGUN_API_KEY": password,
                "MAILGUN_API_URL": f"{base}/v3",
                "MAILGUN_SENDER_DOMAIN": DOMAIN,
            }
        },
        "mailjet": {
            "ANYMAIL": {
                "MAILJET_API_KEY": user,
                "MAILJET_SECRET_KEY": password,
                "MAILJET_API_URL": f"{base}/v3.1/",
            }
        },
        "mandrill": {"ANYMAIL": {"MANDRILL_API_KEY": password, "MANDRILL_API_URL": f"{base}/api/1.0"}},
        "postmark": {"ANYMAIL": {"POSTMARK_SERVER_TOKEN": password, "POSTMARK_API_URL": f"{base}/"}},
        "sendgrid": {"ANYMAIL": {"SENDGRID_API_KEY": password, "SENDGRID_API_URL": f"{base}/v3/"}},
        "mailersend": {"ANYMAIL": {"MAILERSEND_API_TOKEN": password, "MAILERSEND_API_URL": f"{base}/v1/"}},
        "resend": {"ANYMAIL": {"RESEND_API_KEY": password, "RESEND_API_URL": f"{base}/"}},
        "sparkpost": {"ANYMAIL": {"SPARKPOST_API_KEY": password, "SPARKPOST_API_URL": f"{base}/api/v1/"}},
        "postal": {"ANYMAIL": {"POSTAL_API_KEY": password, "POSTAL_API_URL": f"{base}/"}},
    }[api if api != "ses" else "amazon_ses"]


ANYMAIL = {"ses": "amazon_ses", "brevo": "brevo", "mailgun": "mailgun", "mailjet": "mailjet",
           "mandrill": "mandrill", "postmark": "postmark", "sendgrid": "sendgrid", "mailersend": "mailersend",
           "resend": "resend", "sparkpost": "sparkpost", "postal": "postal"}  # fmt: skip


# anymail 15 warns that it no longer supports SendGrid officially; its backend still ships and works.
UNSUPPORTED = pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning")


@UNSUPPORTED
@pytest.mark.parametrize("api", list(ANYMAIL))
def test_django_anymail_backend_over_https(esp, api):
    """Each anymail ESP backend the fake serves, configured as in production but for its API_URL (SES:
    the boto3 client's endpoint_url and verify): the message is sent and kept, with the key's name."""
    from django.core.mail import EmailMessage
    from django.test.utils import override_settings

    from tests.fake_esp.django_setup import configure

    configure()
    cid = new_id()
    settings = {
        "EMAIL_BACKEND": f"anymail.backends.{ANYMAIL[api]}.EmailBackend",
        **anymail_settings(esp, api),
    }
    with override_settings(**settings):
        msg = EmailMessage(
            "s", "b", "app@example.test", ["user@example.test"], headers={CORRELATION_HEADER: cid}
        )
        if api in ("postmark", "mandrill"):
            msg.metadata = {"mailstorm_id": cid}  # where these APIs let a sender attach an id
        assert msg.send() == 1
        status = msg.anymail_status
    assert status.status <= {"queued", "sent"}, status
    rec = kept(esp, cid)
    assert (rec["api"], rec["key"]) == (api, name_of(api))


@UNSUPPORTED
def test_django_anymail_unknown_key_raises_anymail_api_error(esp):
    """anymail with an unknown SendGrid key: AnymailAPIError carrying SendGrid's 401."""
    from anymail.exceptions import AnymailAPIError
    from django.core.mail import EmailMessage
    from django.test.utils import override_settings

    from tests.fake_esp.django_setup import configure

    configure()
    settings = {
        "EMAIL_BACKEND": "anymail.backends.sendgrid.EmailBackend",
        **anymail_settings(esp, "sendgrid"),
    }
    settings["ANYMAIL"] = {**settings["ANYMAIL"], "SENDGRID_API_KEY": "SG.unknown"}
    with override_settings(**settings), pytest.raises(AnymailAPIError) as err:
        EmailMessage("s", "b", "app@example.test", ["user@example.test"]).send()
    assert err.value.status_code == 401


# -- TLS faults on the https listener ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("expired_cert", "certificate has expired"),
        ("wrong_host", "mismatch, certificate is not valid"),
        ("handshake_failure", "EOF|HANDSHAKE_FAILURE|handshake failure"),
    ],
)
def test_tls_faults_act_on_https_handshakes(esp, mode, error):
    """A tls fault acts on the https handshake as on STARTTLS: requests trusting the CA sees the expired
    or wrong-host certificate, or an aborted handshake; the fault is in the ledger; once it is removed the
    SDK's send goes through."""
    esp.control.add_fault({"name": "https-tls", "type": "tls", "mode": mode})
    with pytest.raises(requests.exceptions.SSLError, match=error):
        requests.post(esp.http_url + "/v3/mail/send", timeout=10)
    fired = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_FAULT]) if r["fault"] == "https-tls"]
    assert fired and fired[-1]["phase"] == "tls" and fired[-1]["proto"] == "http"
    esp.control.remove_fault("https-tls")
    cid = new_id()
    sendgrid_send(esp, cid, key=KEY_OF["sendgrid"])
    assert kept(esp, cid)["key"] == name_of("sendgrid")
