"""Aiming a fault: the ``match`` a step must pass and the scope (``count``, ``attempts``) it acts within.

Every fault spec has these three optional fields (mailstorm.fake_esp.faults.base.FaultSpecBase); the
engine applies them before the fault sees the step, so no fault module knows about them.

``match`` (every key given must match; a key the step does not know yet never matches):

    rcpt         a recipient (at rcpt: the one being given; later: any of the message's)
    rcpt_domain  the domain of a recipient, as rcpt
    mail_from    the envelope sender (over HTTP: the message's from address)
    header       {name: regex}: the message's header ``name`` (case-insensitive) matches ``regex``
                 (re.search); SMTP at eod, HTTP (phase http) over the header fields the request carried
                 in its API's own field (or its raw MIME's header block): any message's, for a request
                 of several
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
    "header": frozenset({"eod", "http"}),
    "api_key": frozenset({"http"}),
    "auth_user": _AFTER_MAIL,
    "client_ip": frozenset(_ORDER),
}
ATTEMPT_PHASES = frozenset({"eod", "http"})
REGEX_PREFIX = "re:"
# How check_aim's errors start: the field they are about, which the one-line error names as its place.
AIM_ERROR = re.compile(r"^((?:match\.\w+)|attempts|phase): ")


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
    """A test of one value: a regex search after ``re:``, else a case-insensitive whole-value glob.
    The usual globs skip the regex engine (this runs at every step of every aimed fault): no wildcard
    is a comparison, ``*suffix`` an endswith, ``prefix*`` a startswith."""
    if pattern.startswith(REGEX_PREFIX):
        search = re.compile(pattern[len(REGEX_PREFIX) :]).search
        return lambda value: search(value) is not None
    low = pattern.lower()
    inner = low[1:] if low.startswith("*") else low[:-1] if low.endswith("*") else low
    if not any(c in inner for c in "*?["):
        if low.startswith("*"):
            return lambda value: value.lower().endswith(inner)
        if low.endswith("*"):
            return lambda value: value.lower().startswith(inner)
        return lambda value: value.lower() == low
    match = re.compile(fnmatch.translate(low), re.IGNORECASE).match
    return lambda value: match(value) is not None


def _domain_test(pattern: str) -> Callable[[str], bool]:
    test = _value_test(pattern)
    return lambda address: test(address.rpartition("@")[2])


def _key_test(key: str, pattern: Any) -> Callable[[Context], bool]:
    """The test of one match key over a step's context (closures kept flat: this runs at every step)."""
    if key == "client_ip":
        t = _value_test(pattern)
        return lambda ctx: t(ctx.peer)
    if key in ("mail_from", "auth_user", "api_key"):
        t = _value_test(pattern)
        return lambda ctx: (v := getattr(ctx, key)) is not None and t(v)
    if key in ("rcpt", "rcpt_domain"):
        t = _value_test(pattern) if key == "rcpt" else _domain_test(pattern)

        def any_rcpt(ctx: Context) -> bool:
            if ctx.phase == "rcpt":  # the recipient being given (the envelope holds those before it)
                return ctx.rcpt is not None and t(ctx.rcpt)
            for r in ctx.recipients:  # noqa: SIM110 (a loop: any() over a generator costs more, every step)
                if t(r):
                    return True
            return False

        return any_rcpt
    tests = [_header_test(name, regex) for name, regex in pattern.items()]
    return tests[0] if len(tests) == 1 else lambda ctx: all(t(ctx) for t in tests)


def _header_test(name: str, regex: str) -> Callable[[Context], bool]:
    line = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:[ \t]*([^\r\n]*)")
    value = re.compile(regex).search

    def header(ctx: Context) -> bool:
        head = ctx.head
        if head is None:
            return False
        for m in line.finditer(head):  # noqa: SIM110 (as above)
            if value(m.group(1).decode("utf-8", "replace")):
                return True
        return False

    return header


def compile_match(match: Match) -> Callable[[Context], bool]:
    """One predicate over a step's context that is true when every key of ``match`` matches."""
    tests = [_key_test(key, getattr(match, key)) for key in match.given()]
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda ctx: first(ctx) and second(ctx)
    return lambda ctx: all(t(ctx) for t in tests)


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
