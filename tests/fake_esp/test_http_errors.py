"""Bad requests get the ESP's own 4xx answer naming what is wrong: never a 500, never a traceback."""

from __future__ import annotations

import base64

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.launch import EspProcess
from mailstorm.ledger import Kind, LedgerReader
from mailstorm.ports import free_port

SG = {"Authorization": "Bearer SG.key", "Content-Type": "application/json"}
SES = {
    "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/ses/aws4_request, "
    "SignedHeaders=host, Signature=00",
    "Content-Type": "application/json",
}
MG = {"Authorization": "Basic " + base64.b64encode(b"api:mg-key").decode()}
PM = {"X-Postmark-Server-Token": "pm-token", "Content-Type": "application/json"}
ROUTES = [
    ("/v3/mail/send", SG),
    ("/v2/email/outbound-emails", SES),
    ("/v3/mg.example.test/messages", MG),
    ("/v3/mg.example.test/messages.mime", MG),
    ("/email", PM),
    ("/email/batch", PM),
]


@pytest.fixture(scope="module")
def esp(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("esp-http-errors")
    with EspProcess(d / "ledger", http_port=free_port(), log_path=d / "esp.log") as proc:
        yield proc
    assert "Traceback" not in (d / "esp.log").read_text(), "the fake ESP logged a traceback"


def post(esp: EspProcess, path: str, headers: dict, **kw) -> requests.Response:
    return requests.post(esp.http_url + path, headers=headers, timeout=10, **kw)


def test_sendgrid_malformed_json_and_missing_fields(esp):
    """SendGrid: 400 {"errors": [{message, field}]}, the field named; no Bearer key is a 401."""
    r = post(esp, "/v3/mail/send", SG, data=b'{"personalizations": [')
    assert r.status_code == 400 and "not valid JSON" in r.json()["errors"][0]["message"]
    r = post(esp, "/v3/mail/send", SG, json={"personalizations": [{"to": [{"email": "a@b.test"}]}]})
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "from"
    body = {"from": {"email": "a@b.test"}, "subject": "s", "content": [{"type": "text/plain", "value": "x"}]}
    r = post(esp, "/v3/mail/send", SG, json=body)
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "personalizations"
    r = post(esp, "/v3/mail/send", SG, json={**body, "personalizations": [{"to": [{"email": "nope"}]}]})
    assert r.json()["errors"][0]["field"] == "personalizations.0.to.0.email"
    r = post(esp, "/v3/mail/send", {"Content-Type": "application/json"}, json=body)
    assert r.status_code == 401 and "errors" in r.json()


def test_ses_malformed_json_and_missing_fields(esp):
    """SES: 400 with x-amzn-ErrorType (SerializationException / BadRequestException) and {"message"}."""
    r = post(esp, "/v2/email/outbound-emails", SES, data=b"{not json")
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "SerializationException"
    r = post(esp, "/v2/email/outbound-emails", SES, json={"FromEmailAddress": "a@b.test"})
    assert r.status_code == 400 and r.headers["x-amzn-ErrorType"] == "BadRequestException"
    assert "content" in r.json()["message"]
    raw = {"Content": {"Raw": {"Data": "%%% not base64"}}}
    r = post(esp, "/v2/email/outbound-emails", SES, json=raw)
    assert r.status_code == 400 and "Raw.Data" in r.json()["message"]
    r = post(esp, "/v2/email/outbound-emails", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 403


def test_mailgun_broken_multipart_and_missing_fields(esp):
    """Mailgun: a multipart body that does not parse, or a missing field, is 400 {"message": ...}."""
    broken = {**MG, "Content-Type": "multipart/form-data; boundary=XyZ"}
    r = post(esp, "/v3/mg.example.test/messages", broken, data=b"--XyZ\r\nContent-Disposition: form-da")
    assert r.status_code == 400 and "message" in r.json()
    r = post(esp, "/v3/mg.example.test/messages", {**MG, "Content-Type": "multipart/form-data"}, data=b"x")
    assert r.status_code == 400
    r = post(esp, "/v3/mg.example.test/messages", MG, files={"to": (None, "a@b.test"), "text": (None, "x")})
    assert r.status_code == 400 and r.json()["message"] == "'from' parameter is missing"
    r = post(esp, "/v3/mg.example.test/messages.mime", MG, data={"to": "a@b.test"})
    assert r.status_code == 400 and r.json()["message"] == "'message' parameter is missing"
    r = post(esp, "/v3/mg.example.test/messages", {}, data={"from": "a@b.test"})
    assert r.status_code == 401


def test_postmark_malformed_json_and_missing_fields(esp):
    """Postmark: 422 {"ErrorCode", "Message"} (402 invalid JSON, 300 invalid email request); 401 code 10."""
    r = post(esp, "/email", PM, data=b'{"From": ')
    assert r.status_code == 422 and r.json()["ErrorCode"] == 402
    r = post(esp, "/email", PM, json={"From": "a@b.test", "TextBody": "x"})
    assert r.status_code == 422 and r.json()["ErrorCode"] == 300 and "To" in r.json()["Message"]
    r = post(esp, "/email/batch", PM, json={"From": "a@b.test"})
    assert r.status_code == 422 and r.json()["ErrorCode"] == 403
    r = post(esp, "/email", {"Content-Type": "application/json"}, json={})
    assert r.status_code == 401 and r.json()["ErrorCode"] == 10


def test_every_refusal_is_in_the_ledger(esp):
    """Each refused request is an esp.replied record (proto http) with the status it got."""
    before = LedgerReader(esp.ledger_dir).count(Kind.ESP_REPLIED)
    post(esp, "/email", PM, data=b"[")
    recs = [r for r in LedgerReader(esp.ledger_dir).merged([Kind.ESP_REPLIED])]
    assert len(recs) == before + 1
    assert (recs[-1]["proto"], recs[-1]["api"], recs[-1]["code"]) == ("http", "postmark", 422)


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
    ),
    ctype=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=b",
            "application/x-www-form-urlencoded",
            "text/plain",
        ]
    ),
)
def test_arbitrary_bodies_never_get_a_5xx(esp, route, body, ctype):
    """Whatever the body and content type, every API answers a 2xx or a 4xx, never a 5xx."""
    path, headers = route
    r = post(esp, path, {**headers, "Content-Type": ctype}, data=body)
    assert r.status_code < 500, (path, body, r.status_code, r.text)
