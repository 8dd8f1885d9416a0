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
import itertools
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
# Values of one key (at one phase) remembered as fitting none of its patterns, at most (then forgotten):
# the tests are pure functions of the value, so a value found to miss misses again.
MISSES_KEPT = 4096
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


def _glob_kind(pattern: str) -> tuple[str, str]:
    """How a glob is tested: ("exact", value), ("prefix", start), ("suffix", end) or ("glob", pattern),
    all lower-cased. The usual globs skip the regex engine: no wildcard is a comparison, ``*suffix`` an
    endswith, ``prefix*`` a startswith."""
    low = pattern.lower()
    inner = low[1:] if low.startswith("*") else low[:-1] if low.endswith("*") else low
    if any(c in inner for c in "*?["):
        return "glob", low
    if low.startswith("*"):
        return "suffix", inner
    return ("prefix", inner) if low.endswith("*") else ("exact", low)


def _value_test(pattern: str) -> Callable[[str], bool]:
    """A test of one value: a regex search after ``re:``, else a whole-value glob on the value lower-cased
    (the pattern is lower-cased too: fnmatch's case-sensitive match of the two)."""
    if pattern.startswith(REGEX_PREFIX):
        search = re.compile(pattern[len(REGEX_PREFIX) :]).search
        return lambda value: search(value) is not None
    kind, text = _glob_kind(pattern)
    if kind == "suffix":
        return lambda value: value.lower().endswith(text)
    if kind == "prefix":
        return lambda value: value.lower().startswith(text)
    if kind == "exact":
        return lambda value: value.lower() == text
    match = re.compile(fnmatch.translate(text)).match
    return lambda value: match(value.lower()) is not None


def _header_test(name: str, regex: str) -> Callable[[Context], bool]:
    line = re.compile(rb"(?im)^" + re.escape(name.encode()) + rb"[ \t]*:[ \t]*([^\r\n]*)")
    value = re.compile(regex).search

    def header(ctx: Context) -> bool:
        head = ctx.head
        if head is None:
            return False
        for m in line.finditer(head):  # noqa: SIM110 (a loop: any() over a generator costs more)
            if value(m.group(1).decode("utf-8", "replace")):
                return True
        return False

    return header


# -- the index: every fault of one phase, one look-up per match key ---------------------------------------
# A step is first asked, key by key, whether any of the phase's patterns on that key fits what it shows:
# one look-up for all of them (a set of the exact values, one startswith/endswith over a tuple, one
# combined regex for the other globs and one for the regexes). Nearly always none does, and the step goes
# on with the faults that have no match. Otherwise every pattern of every key is tested alone (``_hits``),
# so which faults see the step is exactly what testing each fault's match gives.
#
# The look-ups run at every step, so each phase's are written out as the source of one function
# (``_Source``, as dataclasses writes __init__), and a key remembers the values no pattern of it fits
# (``_ValueKey.misses``). Measured with callgrind on the fake ESP (smtp-source, bench/bench_smtp.py's 20
# faults that never fire against none): a closure per key and per test, one Python call each (16 over a
# message's three phases) and every value tested again, cost ~27,000 more instructions per message of
# ~525,000; one function per phase and the misses, 7,600-10,300 (bench_smtp.py --instructions).


def _combined(sources: list[str]) -> re.Pattern[str] | None:
    """One regex with a branch per source (each compiles alone, no groups): it matches where any does."""
    return re.compile("|".join(f"(?:{s})" for s in sources)) if sources else None


def _alone(source: str) -> bool:
    """Whether a user's regex keeps its meaning as one branch of a combined regex: no groups (whose
    numbers would shift under back-references), no global inline flags (refused past the start)."""
    try:
        return re.compile(f"(?:{source})").groups == 0
    except re.error:
        return False


class _Source:
    """The source of one generated function: its lines, and the objects its names stand for."""

    def __init__(self, names: dict[str, Any]) -> None:
        self.lines: list[str] = []
        self.names = dict(names)

    def name(self, value: Any) -> str:
        """A global name of the function for ``value`` (a constant, a compiled test)."""
        name = f"_k{len(self.names)}"
        self.names[name] = value
        return name

    def function(self, name: str, filename: str) -> Callable[..., Any]:
        text = f"def {name}(ctx):\n" + "".join(f"    {line}\n" for line in self.lines)
        exec(compile(text, filename, "exec"), self.names)  # the names: only what name() was given
        return self.names[name]


def _any_source(src: _Source, patterns: list[str], var: str) -> str:
    """An expression true when any of ``patterns`` matches the str named ``var`` (as ``_value_test`` of
    each): the exact values, prefixes, suffixes and globs on the value lower-cased (once, into ``low``),
    then the regexes searched in the value (one combined regex, and alone those that cannot join it)."""
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    globs: list[str] = []
    regexes: list[str] = []
    alone: list[str] = []
    for pattern in patterns:
        if pattern.startswith(REGEX_PREFIX):
            source = pattern[len(REGEX_PREFIX) :]
            (regexes if _alone(source) else alone).append(source)
            continue
        kind, text = _glob_kind(pattern)
        if kind == "exact":
            exact.add(text)
        else:
            {"prefix": prefixes, "suffix": suffixes, "glob": globs}[kind].append(text)
    lowered: list[str] = []  # tests of the value lower-cased ("{}": where it goes)
    if len(exact) == 1:
        lowered.append(f"{{}} == {src.name(next(iter(exact)))}")
    elif exact:
        lowered.append(f"{{}} in {src.name(frozenset(exact))}")
    if prefixes:
        lowered.append(f"{{}}.startswith({src.name(tuple(prefixes))})")
    if suffixes:
        lowered.append(f"{{}}.endswith({src.name(tuple(suffixes))})")
    glob = _combined([fnmatch.translate(g) for g in globs])  # "...\Z" each, matched from the start
    if glob is not None:
        lowered.append(f"{src.name(glob.match)}({{}})")
    # The first lowers the value (into ``low`` when others follow), the others reuse it.
    first = f"{var}.lower()" if len(lowered) == 1 else f"(low := {var}.lower())"
    parts = [test.format(first if i == 0 else "low") for i, test in enumerate(lowered)]
    regex = _combined(regexes)
    if regex is not None:
        parts.append(f"{src.name(regex.search)}({var})")
    parts += [f"{src.name(re.compile(source).search)}({var})" for source in alone]
    return " or ".join(parts)


class _ValueKey:
    """A key whose value the step carries (``rcpt``, ``rcpt_domain``, ``mail_from``, ``api_key``,
    ``auth_user``, ``client_ip``): the values it shows at ``phase``, against every pattern on the key."""

    def __init__(self, key: str, phase: str, atoms: list[tuple[int, str]]) -> None:
        self.patterns = [pattern for _, pattern in atoms]
        self.tests = [(atom, _value_test(pattern)) for atom, pattern in atoms]
        self.domain = key == "rcpt_domain"  # the part after the last "@" of a recipient
        # At rcpt the recipient being given; later (eod, http) any recipient of the message.
        self.many = key in ("rcpt", "rcpt_domain") and phase != "rcpt"
        self.attr = "recipients" if self.many else {"client_ip": "peer", "rcpt_domain": "rcpt"}.get(key, key)
        self.misses: set[str] = set()  # values (recipients for rcpt_domain) no pattern of the key fits

    def values(self, ctx: Context) -> list[str]:
        values = getattr(ctx, self.attr)
        if not self.many:
            values = [] if values is None else [values]
        return [v.rpartition("@")[2] for v in values] if self.domain else values

    def hit(self, ctx: Context, hits: set[int]) -> None:
        for value in self.values(ctx):
            hits.update(atom for atom, test in self.tests if test(value))

    def write(self, src: _Source) -> None:
        """The lines that go to ``_hits`` when any of the key's patterns fits a value the step shows. A
        value none fits is remembered (``misses``): the next step showing it again (the same sender, the
        same client, a recipient again at eod) pays one set look-up instead of the tests."""
        misses = src.name(self.misses)
        var = "d" if self.domain else "v"
        inner = ['d = v.rpartition("@")[2]'] if self.domain else []
        inner += [
            f"if {_any_source(src, self.patterns, var)}:",
            "    return _hits(ctx)",
            f"if len({misses}) >= {MISSES_KEPT}:",
            f"    {misses}.clear()",
            f"{misses}.add(v)",
        ]
        if self.many:
            src.lines += [f"for v in ctx.{self.attr}:", f"    if v not in {misses}:"]
        else:
            src.lines += [f"v = ctx.{self.attr}", f"if v is not None and v not in {misses}:"]
        src.lines += [f"{'    ' * (1 + self.many)}{line}" for line in inner]


class _HeaderKey:
    """``header``: is any header named in the block at all (lower-cased, one ``find`` per name: header
    names are ASCII, as the regexes' case folding of bytes), then each (name, regex) alone."""

    def __init__(self, atoms: list[tuple[int, tuple[str, str]]]) -> None:
        self.names = tuple(sorted({name.lower().encode() for _, (name, _) in atoms}))
        self.tests = [(atom, _header_test(name, regex)) for atom, (name, regex) in atoms]

    def some(self, ctx: Context) -> bool:
        return any(test(ctx) for _, test in self.tests)

    def hit(self, ctx: Context, hits: set[int]) -> None:
        hits.update(atom for atom, test in self.tests if test(ctx))

    def write(self, src: _Source) -> None:
        # bytes.find, not ``in``: ``bytes in bytes`` first tries the operand as an int and clears the
        # TypeError (~1,900 instructions a test).
        named = " or ".join(f"head.find({src.name(name)}) >= 0" for name in self.names)
        src.lines += [
            "head = ctx.low_head",
            f"if head is not None and ({named}) and {src.name(self.some)}(ctx):",
            "    return _hits(ctx)",
        ]


class MatchIndex:
    """The ``match`` of every fault installed at one phase, indexed per key: ``select`` gives, in their
    order, the items (faults) whose match the step passes and those without a match."""

    def __init__(self, phase: str, items: list[tuple[Any, Match | None]]) -> None:
        values: dict[str, list[tuple[int, str]]] = {}
        headers: list[tuple[int, tuple[str, str]]] = []
        self._items: list[tuple[Any, frozenset[int] | None]] = []
        atom_ids = itertools.count()  # an atom: one fault's pattern on one key (one header name)
        for item, match in items:
            if match is None:
                self._items.append((item, None))
                continue
            atoms: list[int] = []
            for key in match.given():
                pairs = list(match.header.items()) if key == "header" else [getattr(match, key)]  # type: ignore[union-attr]
                for pattern in pairs:
                    atoms.append(next(atom_ids))
                    if key == "header":
                        headers.append((atoms[-1], pattern))
                    else:
                        values.setdefault(key, []).append((atoms[-1], pattern))
            self._items.append((item, frozenset(atoms)))
        self._keys: list[_ValueKey | _HeaderKey] = [_ValueKey(k, phase, a) for k, a in values.items()]
        if headers:
            self._keys.append(_HeaderKey(headers))  # last: the costliest look-up
        # The usual step: no pattern fits, one look-up per key, and the faults without a match (free).
        src = _Source({"_hits": self._hits, "_free": [item for item, atoms in self._items if atoms is None]})
        for key in self._keys:
            key.write(src)
        src.lines.append("return _free")
        self.select: Callable[[Context], list[Any]] = src.function("select", f"<MatchIndex {phase}>")

    def _hits(self, ctx: Context) -> list[Any]:
        """Every pattern of every key tested alone: the items whose every atom the step passes."""
        hits: set[int] = set()
        for key in self._keys:
            key.hit(ctx, hits)
        return [item for item, atoms in self._items if atoms is None or atoms <= hits]


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
