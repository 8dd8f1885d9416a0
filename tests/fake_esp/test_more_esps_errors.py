"""Mailjet, Brevo, Elastic Email, SendPulse and Mandrill over plain HTTP, following each official API
reference: a malformed or incomplete body gets that service's own 400 shape (never a 500 or a
traceback), a missing credential its 401, a throttle its 429 shape; and the profiles load and are listed.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.fake_esp.profiles import load_profile
from mailstorm.fake_esp.spec import parse_fault
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port

MJ = {"Authorization": "Basic " + base64.b64encode(b"mj-key:mj-secret").decode()}
BREVO = {"api-key": "xkeysib-test"}
EE = {"X-ElasticEmail-ApiKey": "ee-key"}
MORE = ("mailjet", "brevo", "elasticemail", "sendpulse", "mandrill")
THROTTLE = {"name": "t", "type": "throttle", "phase": "http", "rate": 0.05, "burst": 1, "key": "api_key"}


@pytest.fixture(scope="module")
def esp(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp-more-errors")
    with EspProcess(d / "ledger", http_port=free_port(), log_path=d / "esp.log") as proc:
        yield proc
    assert "Traceback" not in (d / "esp.log").read_text(), "the fake ESP logged a traceback"


@pytest.fixture
def clean(esp: EspProcess):
    esp.control.reset()
    yield esp
    esp.control.reset()


def post(esp: EspProcess, path: str, headers: dict, **kw) -> requests.Response:
    return requests.post(esp.http_url + path, headers=headers, timeout=10, **kw)


def sendpulse_headers(esp: EspProcess, client: str = "sp-client") -> dict[str, str]:
    """An OAuth token from the fake, as SendPulse's reference describes (client credentials)."""
    r = post(
        esp,
        "/oauth/access_token",
        {},
        json={"grant_type": "client_credentials", "client_id": client, "client_secret": "s"},
    )
    assert r.status_code == 200 and r.json()["token_type"] == "Bearer"
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_mailjet_bad_bodies(esp):
    """Mailjet: broken JSON is the global error mj-0002; a message error is 400 Messages[0].Errors with
    ErrorCode and ErrorRelatedTo; no Basic auth is 401."""
    r = post(esp, "/v3.1/send", MJ, data=b'{"Messages": [')
    assert r.status_code == 400 and r.json()["ErrorCode"] == "mj-0002" and r.json()["StatusCode"] == 400
    msg = {"From": {"Email": "a@b.test"}, "To": [{"Email": "nope"}], "TextPart": "x"}
    r = post(esp, "/v3.1/send", MJ, json={"Messages": [msg]})
    (err,) = r.json()["Messages"][0]["Errors"]
    assert r.status_code == 400 and r.json()["Messages"][0]["Status"] == "error"
    assert (err["ErrorCode"], err["ErrorRelatedTo"], err["StatusCode"]) == ("mj-0013", ["To[0].Email"], 400)
    r = post(
        esp, "/v3.1/send", MJ, json={"Messages": [{**msg, "To": [{"Email": "u@b.test"}], "TextPart": ""}]}
    )
    assert r.json()["Messages"][0]["Errors"][0]["ErrorCode"] == "send-0003"
    r = post(esp, "/v3.1/send", {}, json={"Messages": [msg]})
    assert r.status_code == 401 and r.json()["StatusCode"] == 401


def test_brevo_bad_bodies(esp):
    """Brevo: 400 {code, message} (bad_request / missing_parameter / invalid_parameter); no api-key 401."""
    r = post(esp, "/v3/smtp/email", BREVO, data=b"{nope")
    assert r.status_code == 400 and r.json()["code"] == "bad_request"
    body = {"sender": {"email": "a@b.test"}, "subject": "s", "htmlContent": "<p>x</p>"}
    r = post(esp, "/v3/smtp/email", BREVO, json=body)
    assert r.status_code == 400 and r.json() == {"code": "missing_parameter", "message": "to is missing"}
    r = post(esp, "/v3/smtp/email", BREVO, json={**body, "to": [{"email": "bad"}]})
    assert r.status_code == 400 and r.json()["code"] == "invalid_parameter"
    r = post(esp, "/v3/smtp/email", {}, json=body)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_elasticemail_bad_bodies(esp):
    """Elastic Email: 400 {"Error": ...} naming the field; no X-ElasticEmail-ApiKey is 401."""
    r = post(esp, "/v4/emails/transactional", EE, data=b"[1,")
    assert r.status_code == 400 and "Error" in r.json()
    r = post(esp, "/v4/emails/transactional", EE, json={"Recipients": {"To": ["u@b.test"]}})
    assert r.status_code == 400 and r.json() == {"Error": "Content is required"}
    r = post(esp, "/v4/emails/transactional", {}, json={})
    assert r.status_code == 401


def test_sendpulse_bad_bodies_and_token(esp):
    """SendPulse: a bad token request is an OAuth error (400/401); a send without a token 401; a bad email
    400 {error_code, message}."""
    r = post(esp, "/oauth/access_token", {}, json={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = post(esp, "/oauth/access_token", {}, json={"grant_type": "client_credentials"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = post(esp, "/smtp/emails", {}, json={"email": {}})
    assert r.status_code == 401 and r.json()["error_code"] == 401
    auth = sendpulse_headers(esp)
    r = post(esp, "/smtp/emails", auth, data=b"{")
    assert r.status_code == 400 and r.json()["error_code"] == 400
    r = post(esp, "/smtp/emails", auth, json={"email": {"text": "x", "subject": "s", "to": []}})
    assert r.status_code == 400 and "from" in r.json()["message"]


def test_mandrill_bad_bodies(esp):
    """Mandrill: 400 {status: error, code: -2, name: ValidationError}; a missing key is 401 Invalid_Key."""
    r = post(esp, "/api/1.0/messages/send.json", {}, data=b'{"key": ')
    assert r.status_code == 400 and (r.json()["status"], r.json()["name"]) == ("error", "ValidationError")
    r = post(esp, "/api/1.0/messages/send.json", {}, json={"key": "k", "message": {"from_email": "a@b.test"}})
    assert r.status_code == 400 and r.json()["code"] == -2 and "to" in r.json()["message"]
    r = post(esp, "/api/1.0/messages/send.json", {}, json={"message": {}})
    assert r.status_code == 401 and r.json()["name"] == "Invalid_Key"


def test_throttled_sends_get_each_services_429_shape(clean):
    """Over plain HTTP, the second send in the bucket's window gets each service's 429 body (and Brevo's
    x-sib-ratelimit-* headers, Retry-After everywhere); nothing throttled reaches the ledger."""
    esp = clean
    esp.control.add_fault(THROTTLE)
    sp = sendpulse_headers(esp, "sp-429")  # takes the sp-429 key's one token: its first send is throttled
    to, frm = [{"email": "u@b.test"}], {"email": "a@b.test"}
    mailjet = {"From": {"Email": "a@b.test"}, "To": [{"Email": "u@b.test"}], "TextPart": "x"}
    brevo = {"sender": frm, "to": to, "subject": "s", "textContent": "x"}
    ee = {"Recipients": {"To": ["u@b.test"]}, "Content": {"From": "a@b.test", "Body": [{"ContentType": "x"}]}}
    mandrill = {"key": "k", "message": {"from_email": "a@b.test", "to": to, "text": "x"}}
    sends = {
        "mailjet": ("/v3.1/send", MJ, {"Messages": [mailjet]}),
        "brevo": ("/v3/smtp/email", BREVO, brevo),
        "elasticemail": ("/v4/emails/transactional", EE, ee),
        "mandrill": ("/api/1.0/messages/send.json", {}, mandrill),
    }
    shapes = {}
    for api, (path, headers, body) in sends.items():
        assert post(esp, path, headers, json=body).status_code < 300
        r = post(esp, path, headers, json=body)
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1, (api, r.text)
        shapes[api] = r
    email = {"text": "x", "subject": "s", "from": frm, "to": to}
    r = post(esp, "/smtp/emails", sp, json={"email": email})
    assert r.status_code == 429 and r.json()["error_code"] == 429
    assert shapes["mailjet"].json()["StatusCode"] == 429 and "ErrorIdentifier" in shapes["mailjet"].json()
    assert shapes["brevo"].json()["code"] == "too_many_requests"
    assert {"x-sib-ratelimit-limit", "x-sib-ratelimit-remaining", "x-sib-ratelimit-reset"} <= {
        h.lower() for h in shapes["brevo"].headers
    }
    assert "Error" in shapes["elasticemail"].json()
    assert shapes["mandrill"].json()["status"] == "error" and shapes["mandrill"].json()["name"]
    refused = [r for r in LedgerReader(esp.ledger_dir).records([Kind.ESP_REPLIED]) if r["code"] == 429]
    assert {r["api"] for r in refused} >= set(MORE)


ROUTES = [
    ("/v3.1/send", MJ),
    ("/v3/smtp/email", BREVO),
    ("/v4/emails/transactional", EE),
    ("/oauth/access_token", {}),
    ("/smtp/emails", {"Authorization": "Bearer c3AtY2xpZW50.x"}),
    ("/api/1.0/messages/send.json", {}),
    ("/api/1.3/messages/send.json", {}),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(ROUTES),
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
            max_leaves=12,
        ).map(lambda v: requests.models.complexjson.dumps(v).encode()),
        st.fixed_dictionaries(
            {
                "Messages": st.lists(
                    st.dictionaries(
                        st.sampled_from(["From", "To", "TextPart", "Headers"]),
                        st.none() | st.text(max_size=5) | st.lists(st.text(max_size=5)),
                    )
                )
            }
        ).map(lambda v: requests.models.complexjson.dumps(v).encode()),
    ),
)
def test_arbitrary_bodies_never_get_a_5xx(esp, route, body):
    """Whatever the body, every one of these APIs answers a 2xx or a 4xx, never a 5xx."""
    path, headers = route
    r = post(esp, path, {**headers, "Content-Type": "application/json"}, data=body)
    assert r.status_code < 500, (path, body, r.status_code, r.text)


@pytest.mark.parametrize("name", MORE)
def test_profile_loads_and_its_faults_are_valid(name):
    """Each profile loads, names its API, cites its sources, and turns into valid fault specs."""
    profile = load_profile(name)
    assert profile.api == name and profile.title and profile.sources
    assert profile.webhook is not None and profile.webhook.retry_schedule_s
    for rate in (None, 5.0):
        assert all(parse_fault(f).name.startswith("profile.") for f in profile.faults(rate=rate))


def test_list_profiles_shows_each_with_a_one_line_description():
    """`mailstorm esp --list-profiles` lists the five profiles, each on one line ending in its title."""
    out = subprocess.run(
        [sys.executable, "-m", "mailstorm.cli", "esp", "--list-profiles"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    for name in MORE:
        assert lines[name].rstrip().endswith(load_profile(name).title)
