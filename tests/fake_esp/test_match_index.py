"""The index of aimed faults' matches (mailstorm.fake_esp.faults.aim.MatchIndex): which faults a step
passes is exactly what the documented semantics give pattern by pattern (a glob: case-insensitive, the
whole value; ``re:``: a search; every key of a match; any recipient past RCPT), for exact values, globs,
regexes, several faults on one key, headers; and a running ESP's index follows faults added, replaced
and removed over the control API."""

from __future__ import annotations

import fnmatch
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailstorm.fake_esp.faults import aim
from mailstorm.fake_esp.faults.aim import Match, MatchIndex
from mailstorm.fake_esp.faults.base import Context
from tests.fake_esp.clients import smtp_transaction

VALUES = [
    "a@x.test",
    "B@X.Test",
    "bob+12@y.test",
    "bob+ab@y.test",
    "carol@z.example",
    "10.0.0.1",
    "127.0.0.1",
]
PATTERNS = [
    # exact values (any case), prefixes, suffixes, other globs
    "a@x.test", "b@x.test", "A@X.TEST", "bob*", "10.*", "*@x.test", "*.example", "*", "?@x.test",
    "[ab]*", "*o*", "b[!x]b*", "1?.0.0.*", "[",
    # regexes: plain (combined into one), with groups or a global flag (each tested alone)
    "re:^bob\\+\\d+@", "re:X", "re:test$", "re:^$", "re:(?i)x\\.test$", "re:(b)\\1", "re:(?P<n>o)b",
    "re:ca|z",
]  # fmt: skip
HEADERS = {"X-Tenant": ["^acme-\\d+$", "globex"], "Subject": ["hello", "^$"]}
KEYS = ("rcpt", "rcpt_domain", "mail_from", "auth_user", "api_key", "client_ip")


def documented(pattern: str, value: str) -> bool:
    """The docs' words for one pattern, written independently of the index."""
    if pattern.startswith("re:"):
        return re.search(pattern[3:], value) is not None
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def header_values(message: bytes, name: str) -> list[str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    values = []
    for line in head.split("\r\n"):
        m = re.match(re.escape(name) + r"[ \t]*:[ \t]*(.*)", line, re.IGNORECASE)
        if m:
            values.append(m.group(1))
    return values


def passes(match: Match | None, phase: str, ctx: Context) -> bool:
    """Whether a step passes ``match`` by the documented semantics."""
    if match is None:
        return True
    for key in match.given():
        if key == "header":
            for name, regex in match.header.items():
                if not any(re.search(regex, v) for v in header_values(ctx.message or b"", name)):
                    return False
            continue
        pattern = getattr(match, key)
        if key in ("rcpt", "rcpt_domain"):
            values = ([ctx.rcpt] if ctx.rcpt is not None else []) if phase == "rcpt" else ctx.recipients
            if key == "rcpt_domain":
                values = [v.rpartition("@")[2] for v in values]
        else:
            value = ctx.peer if key == "client_ip" else getattr(ctx, key)
            values = [] if value is None else [value]
        if not any(documented(pattern, v) for v in values):
            return False
    return True


matches = st.one_of(
    st.none(),
    st.builds(
        lambda keys, header: Match(**keys, header=header or None),
        st.dictionaries(st.sampled_from(KEYS), st.sampled_from(PATTERNS), max_size=3),
        st.dictionaries(
            st.sampled_from(sorted(HEADERS)),
            st.sampled_from(sorted({r for v in HEADERS.values() for r in v})),
        ),
    ).filter(lambda m: m.given()),
)
# Random globs too, over the characters that mean something to fnmatch and the values' own.
random_globs = st.text(alphabet="ab.@*?[]!-xX10", min_size=1, max_size=8)
optional_value = st.none() | st.sampled_from(VALUES)
messages = st.builds(
    lambda lines: ("\r\n".join([*lines, "", "body"]) + "\r\n").encode(),
    st.lists(
        st.sampled_from(
            ["X-Tenant: acme-7", "x-tenant:globex-1", "Subject: hello", "Subject:", "X-Other: acme-7"]
        ),
        max_size=3,
    ),
)


# What a step shows: peer, mail_from, rcpt, recipients, auth_user (also the API key), message.
step = st.tuples(
    st.sampled_from(VALUES),
    optional_value,
    optional_value,
    st.lists(st.sampled_from(VALUES), max_size=3),
    optional_value,
    st.none() | messages,
)
# The faults of one phase: random matches, and random globs on one key beside them.
phase_faults = {
    "faults": st.lists(matches, min_size=1, max_size=8),
    "globs": st.lists(random_globs, max_size=3),
    "phase": st.sampled_from(["mail", "rcpt", "eod", "http"]),
}


def step_context(peer, mail_from, rcpt, recipients, auth_user, message) -> Context:
    """The step's context; every value a new string of its text, as the wire gives them."""

    def fresh(value: str | None) -> str | None:
        return None if value is None else "".join(value)

    ctx = Context(
        peer=fresh(peer),
        mail_from=fresh(mail_from),
        rcpt=fresh(rcpt),
        recipients=[fresh(r) for r in recipients],
        auth_user=fresh(auth_user),
        api_key=fresh(auth_user),
    )
    ctx.new_message(message, None)
    return ctx


@settings(max_examples=400, deadline=None)
@given(**phase_faults, shown=step)
def test_the_index_selects_what_each_pattern_alone_says(faults, globs, phase, shown):
    faults = faults + [Match(rcpt=g) for g in globs]
    ctx = step_context(*shown)
    index = MatchIndex(phase, list(enumerate(faults)))
    want = [i for i, m in enumerate(faults) if passes(m, phase, ctx)]
    assert index.select(ctx) == want


def test_exact_glob_and_regex_on_one_key_each_hit_their_own():
    """Several faults on ``rcpt`` (an exact value, a suffix glob, a glob with ``?``, a regex) and one
    without a match: each recipient selects exactly the faults whose pattern fits it, in their order."""
    index = MatchIndex(
        "rcpt",
        [
            ("exact", Match(rcpt="vip@rcpt.test")),
            ("free", None),
            ("suffix", Match(rcpt="*@rcpt.test")),
            ("glob", Match(rcpt="v?p@*")),
            ("regex", Match(rcpt="re:^bob\\+\\d+@")),
        ],
    )

    def at(rcpt: str) -> list[str]:
        return index.select(Context(rcpt=rcpt))

    assert at("VIP@rcpt.test") == ["exact", "free", "suffix", "glob"]
    assert at("vop@other.test") == ["free", "glob"]
    assert at("bob+12@rcpt.test") == ["free", "suffix", "regex"]
    assert at("bob+ab@other.test") == ["free"]


def test_a_fault_needs_every_key_and_a_header_needs_its_line():
    index = MatchIndex(
        "eod",
        [
            ("both", Match(mail_from="*@news.test", header={"X-Tenant": "^acme-\\d+$"})),
            ("domain", Match(rcpt_domain="*.bad.test")),
        ],
    )
    ctx = Context(mail_from="n@news.test", recipients=["a@good.test", "b@mx.bad.test"])
    ctx.new_message(b"Subject: s\r\nX-Tenant: acme-7\r\n\r\nbody\r\n", None)
    assert index.select(ctx) == ["both", "domain"]
    ctx.new_message(b"Subject: s\r\nX-Tenant: globex\r\n\r\nbody\r\n", None)
    assert index.select(ctx) == ["domain"]
    ctx.mail_from, ctx.recipients = "n@other.test", ["a@good.test"]
    ctx.new_message(b"Subject: s\r\nX-Tenant: acme-7\r\n\r\nbody\r\n", None)
    assert index.select(ctx) == []


def refused_at(port: int, rcpt: str) -> str | None:
    tr = smtp_transaction(port, "idx", rcpt=rcpt)
    return next((p for p, c in tr.codes.items() if c == 550), None)


def test_the_running_esps_index_follows_faults_added_replaced_and_removed(esp):
    """Over the control API: each fault added on ``rcpt`` refuses its recipients at once, a replaced one
    refuses by its new pattern, a removed one no more, and after a reset nothing is refused."""
    reply = {"type": "reply", "phase": "rcpt", "reply": "550 5.7.1 aimed"}
    a = esp.control.add_fault({**reply, "match": {"rcpt": "a@idx.test"}})
    assert [refused_at(esp.port, r) for r in ("a@idx.test", "b1@idx.test")] == ["rcpt", None]
    b = esp.control.add_fault({**reply, "match": {"rcpt": "b?@idx.test"}})
    assert [refused_at(esp.port, r) for r in ("a@idx.test", "b1@idx.test", "c@idx.test")] == [
        "rcpt",
        "rcpt",
        None,
    ]
    esp.control.remove_fault(a)
    assert [refused_at(esp.port, r) for r in ("a@idx.test", "b1@idx.test")] == [None, "rcpt"]
    esp.control.replace_fault(b, {**reply, "match": {"rcpt": "re:^c@"}})
    assert [refused_at(esp.port, r) for r in ("b1@idx.test", "c@idx.test")] == [None, "rcpt"]
    esp.control.reset()
    assert refused_at(esp.port, "c@idx.test") is None


@pytest.mark.parametrize("pattern", ["re:(?x) ^ c @", "re:(c)@"])
def test_a_regex_that_cannot_join_the_combined_one_is_tested_alone(pattern):
    """A regex with a global flag or a group keeps its meaning (it is tested on its own)."""
    index = MatchIndex("rcpt", [("r", Match(rcpt=pattern)), ("x", Match(rcpt="re:^x"))])
    assert index.select(Context(rcpt="c@idx.test")) == ["r"]
    assert index.select(Context(rcpt="x@idx.test")) == ["x"]


@settings(max_examples=300, deadline=None)
@given(**phase_faults, run=st.lists(step, min_size=1, max_size=6))
def test_one_index_over_many_steps_selects_what_each_pattern_alone_says(faults, globs, phase, run):
    """The look-ups before the patterns remember the values that fit none of a key's patterns: over a
    run of steps through one index (each step twice, so that every remembered value is met again, as a
    new string of the same text), select still gives exactly what the patterns say."""
    faults = faults + [Match(rcpt=g) for g in globs]
    index = MatchIndex(phase, list(enumerate(faults)))
    for shown in run + run:
        ctx = step_context(*shown)
        assert index.select(ctx) == [i for i, m in enumerate(faults) if passes(m, phase, ctx)]


def test_the_values_remembered_as_missing_are_bounded(monkeypatch):
    """Past ``MISSES_KEPT`` values a key forgets them all; a forgotten value is tested again, alike."""
    monkeypatch.setattr(aim, "MISSES_KEPT", 3)
    index = MatchIndex("rcpt", [("hit", Match(rcpt="*@hit.test"))])
    (key,) = index._keys
    for i in [*range(10), *range(10)]:
        assert index.select(Context(rcpt=f"r{i}@miss.test")) == []
        assert index.select(Context(rcpt=f"r{i}@hit.test")) == ["hit"]
        assert 0 < len(key.misses) <= 3


@pytest.mark.parametrize(
    ("pattern", "value", "fits"),
    [
        ("\u017f?@x.test", "S1@x.test", False),  # the regex engine's case folding: long s is S
        ("\u017f?@x.test", "\u017f1@X.test", True),
        ("k?@x.test", "\u212a1@x.test", True),  # the Kelvin sign lower-cases to k
        ("*@BIG.test", "a@big.TEST", True),
    ],
)
def test_a_glob_is_matched_on_the_value_lower_cased(pattern, value, fits):
    """As the docs say (fnmatch of the two lower-cased), for globs the regex engine runs too."""
    assert documented(pattern, value) is fits
    for phase, ctx in (("rcpt", Context(rcpt=value)), ("eod", Context(recipients=[value]))):
        index = MatchIndex(phase, [("g", Match(rcpt=pattern)), ("x", Match(rcpt=f"{pattern}x"))])
        assert index.select(ctx) == (["g"] if fits else [])
