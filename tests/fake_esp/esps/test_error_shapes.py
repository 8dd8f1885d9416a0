"""Each newer API refuses an arbitrary body in its own service's shape, never a 5xx (Hypothesis): the
status is one that service answers bad input with, and the body is that service's error document, so a
client's error handling (its SDK's, anymail's) reads it as it reads the real service's."""

from __future__ import annotations

import importlib
from typing import Any

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fake_esp.http_support import post


def _mailersend(status: int, body: Any) -> bool:
    return (
        status in (401, 422)
        and isinstance(body.get("message"), str)
        and (status == 401 or isinstance(body.get("errors"), dict))
    )


def _resend(status: int, body: Any) -> bool:
    return (
        status in (400, 401, 422) and body.get("statusCode") == status and isinstance(body.get("name"), str)
    )


def _sparkpost(status: int, body: Any) -> bool:
    errors = body.get("errors")
    return (
        status in (400, 401, 422) and isinstance(errors, list) and isinstance(errors[0].get("message"), str)
    )


def _postal(status: int, body: Any) -> bool:
    # Postal answers HTTP 200 with its status envelope; Rails answers 400 for JSON it cannot parse.
    if status == 400:
        return True
    return status == 200 and body.get("status") in ("error", "parameter-error") and "message" in body["data"]


def _hubspot(status: int, body: Any) -> bool:
    return status in (400, 401) and body.get("status") == "error" and isinstance(body.get("category"), str)


def _klaviyo(status: int, body: Any) -> bool:
    errors = body.get("errors")
    return status in (400, 401) and isinstance(errors, list) and errors[0].get("status") == status


SHAPES = {"mailersend": _mailersend, "resend": _resend, "sparkpost": _sparkpost, "postal": _postal,
          "hubspot": _hubspot, "klaviyo": _klaviyo}  # fmt: skip
ROUTES = [
    (api, path, headers)
    for api in SHAPES
    for path, headers in importlib.import_module(f"tests.fake_esp.esps.test_{api}").ROUTES
]
KEYS = ["from", "to", "subject", "text", "headers", "content", "recipients", "message", "emailId", "data",
        "plain_body", "rcpt_to", "mail_from", "attributes", "type", "email", "name", "value", "address",
        "tags", "properties", "metric", "profile", "email_rfc822", "sendId"]  # fmt: skip
VALUES = st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.just("a@b.test")
BODIES = st.one_of(
    st.binary(max_size=200),
    st.recursive(
        VALUES,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(KEYS), kids, max_size=5),
        max_leaves=14,
    ).map(lambda v: requests.models.complexjson.dumps(v).encode()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=BODIES)
def test_a_refused_body_gets_the_services_own_error_shape(esp, route, body):
    api, path, headers = route
    r = post(esp, path, {**headers, "Content-Type": "application/json"}, data=body)
    assert r.status_code < 500, (api, body, r.status_code, r.text)
    if r.status_code < 300 and not (api == "postal" and r.json()["status"] != "success"):
        return  # a body the service would send (Hypothesis found a valid one)
    parsed = r.json() if r.content else {}
    assert SHAPES[api](r.status_code, parsed), (api, body, r.status_code, r.text)
