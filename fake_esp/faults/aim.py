"""Aiming a fault: the ``match`` a step must pass and the scope (``count``, ``attempts``) it acts within.

Every fault spec has these three optional fields (mailstorm.fake_esp.faults.base.FaultSpecBase); the
engine applies them before the fault sees the step, so no fault module knows about them.

``match`` (every key given must match; a key the step does not know yet never matches):

    rcpt         a recipient (at rcpt: the one being given; later: any of the message's)
    rcpt_domain  the domain of a recipient, as rcpt
    mail_from    the envelope sender (over HTTP: the message's from address)
    header       {name: regex}: the message's header ``name`` (case-insensitive) matches ``regex``
                 (re.search); SMTP at eod only (HTTP APIs carry headers in each ESP's own shape)
    api_key      the API key's name (HTTP only; the key's fingerprint when it is a secret, as the ledger)
    auth_user    the SMTP AUTH user; over HTTP the API key's name
    client_ip    the client's IP address

A pattern is a glob (``*``, ``?``, ``[...]``: fnmatch, case-insensitive, matching the whole value) or, when
it starts with ``re:``, a Python regular expression searched in the value (``re:^bob\\+\\d+@``). Each key is
only known from some phase on (``KNOWN_AT``): a fault whose phases do not all know a key it matches on is
refused when it is parsed, naming the key.

``count: N``: the fault acts on the next N steps it matches, then ends itself (an ``esp.fault.ended``
record, reason ``count``). ``attempts: [1, 2]``: the fault acts only on a message's 1st and 2nd attempts,
counted per correlation id (the ``X-Mailstorm-Id`` or the carrier the ESP reads) each time a matching
step of that message reaches this fault; phases ``eod`` and ``http`` only (where the id is known), and a
message without an id is never aimed at.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from mailstorm.fake_esp.faults.base import Context

_ORDER = ("connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "eod", "http")
_AFTER_MAIL = frozenset({"mail", "rcpt", "data", "eod", "http"})
_AFTER_RCPT = frozenset({"rcpt", "data", "eod", "http"})
# The phases at which each match key is known (a fault aimed at a key elsewhere could never act).
KNOWN_AT: dict[str, frozenset[str]] = {
    "rcpt": _AFTER_RCPT,
    "rcpt_domain": _AFTER_RCPT,
    "mail_from": _AFTER_MAIL,
    "header": frozenset({"eod"}),
    "api_key": frozenset({"http"}),
    "auth_user": _AFTER_MAIL,
    "client_ip": frozenset(_ORDER),
}
ATTEMPT_PHASES = frozenset({"eod", "http"})
REGEX_PREFIX = "re:"
# How check_aim's errors start: the field they are about, which the one-line error names as its place.
AIM_ERROR = re.compile(r"^((?:match\.\w+)|attempts): ")


def _check_pattern(value: str) -> str:
    if value.startswith(REGEX_PREFIX):
        try:
            re.compile(value[len(REGEX_PREFIX) :])
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


class Match(BaseModel):
    """What a step must show for the fault to see it (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rcpt: str | None = Field(default=None, min_length=1)
    rcpt_domain: str | None = Field(default=None, min_length=1)
    mail_from: str | None = Field(default=None, min_length=1)
    header: dict[str, str] | None = Field(default=None, min_length=1)
    api_key: str | None = Field(default=None, min_length=1)
    auth_user: str | None = Field(default=None, min_length=1)
    client_ip: str | None = Field(default=None, min_length=1)

    @field_validator("rcpt", "rcpt_domain", "mail_from", "api_key", "auth_user", "client_ip")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        return v if v is None else _check_pattern(v)

    @field_validator("header")
    @classmethod
    def _header_regexes(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for name, regex in (v or {}).items():
            if not re.fullmatch(r"[!-9;-~]+", name):
                raise ValueError(f"{name!r} is not a header name")
            try:
                re.compile(regex)
            except re.error as exc:
                raise ValueError(f"{name}: not a valid regular expression: {exc}") from None
        return v

    def given(self) -> list[str]:
        return [k for k in type(self).model_fields if getattr(self, k) is not None]


def _value_test(pattern: str) -> Callable[[str], bool]:
    """A test of one value: a regex search after ``re:``, else a case-insensitive whole-value glob
    (a pattern without wildcards is a plain comparison: the fast path of most aims)."""
    if pattern.startswith(REGEX_PREFIX):
        search = re.compile(pattern[len(REGEX_PREFIX) :]).search
        return lambda value: search(value) is not None
    low = pattern.lower()
    if not any(c in low for c in "*?["):
        return lambda value: value.lower() == low
    match = re.compile(fnmatch.translate(low)).match
    return lambda value: match(value.lower()) is not None


def _recipients(ctx: Context) -> list[str]:
    if ctx.phase == "rcpt":
        return [ctx.rcpt] if ctx.rcpt else []
    return ctx.recipients


def compile_match(match: Match) -> Callable[[Context], bool]:
    """One predicate over a step's context that is true when every key of ``match`` matches."""
    tests: list[Callable[[Any], bool]] = []
    if match.client_ip is not None:
        t_ip = _value_test(match.client_ip)
        tests.append(lambda ctx: t_ip(ctx.peer))
    if match.mail_from is not None:
        t_from = _value_test(match.mail_from)
        tests.append(lambda ctx: ctx.mail_from is not None and t_from(ctx.mail_from))
    if match.auth_user is not None:
        t_user = _value_test(match.auth_user)
        tests.append(lambda ctx: ctx.auth_user is not None and t_user(ctx.auth_user))
    if match.api_key is not None:
        t_key = _value_test(match.api_key)
        tests.append(lambda ctx: ctx.api_key is not None and t_key(ctx.api_key))
    if match.rcpt is not None:
        t_rcpt = _value_test(match.rcpt)
        tests.append(lambda ctx: any(t_rcpt(r) for r in _recipients(ctx)))
    if match.rcpt_domain is not None:
        t_dom = _value_test(match.rcpt_domain)
        tests.append(lambda ctx: any(t_dom(r.rpartition("@")[2]) for r in _recipients(ctx)))
    for name, regex in (match.header or {}).items():
        line = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:[ \t]*([^\r\n]*)")
        value = re.compile(regex).search
        tests.append(lambda ctx, line=line, value=value: _header_matches(ctx, line, value))
    if len(tests) == 1:
        return tests[0]
    return lambda ctx: all(t(ctx) for t in tests)


def _header_matches(ctx: Context, line: re.Pattern[bytes], value: Callable[[str], Any]) -> bool:
    if ctx.message is None:
        return False
    end = ctx.message.find(b"\r\n\r\n")
    head = ctx.message if end < 0 else ctx.message[: end + 2]
    return any(value(m.group(1).decode("utf-8", "replace")) for m in line.finditer(head))


def check_aim(spec: Any) -> None:
    """Refuse an aim the fault's phases cannot see (``ValueError`` naming the field)."""
    phases = spec.phases
    if spec.match is not None:
        for key in spec.match.given():
            unknown = [p for p in _ORDER if p in phases and p not in KNOWN_AT[key]]
            if unknown:
                raise ValueError(
                    f"match.{key}: not known at phase {', '.join(unknown)} "
                    f"(known at {', '.join(p for p in _ORDER if p in KNOWN_AT[key])})"
                )
    if spec.attempts is not None and not phases <= ATTEMPT_PHASES:
        where = ", ".join(sorted(phases))
        raise ValueError(f"attempts: a message's attempts are counted at phase eod or http, not {where}")
