"""Shared Hypothesis strategies (append only: each package adds its own section)."""

from __future__ import annotations

import base64

from hypothesis import strategies as st

# -- fake ESP: fault specs (dicts in the shape of mailstorm.fake_esp.spec.FaultSpec)
SMTP_PHASES = ("connect", "ehlo", "mail", "rcpt", "data", "eod")

probabilities = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]) | st.floats(0, 1, allow_nan=False)
smtp_phases = st.sampled_from(SMTP_PHASES)
refusals = st.sampled_from(
    ["451 4.3.0 Temporary service failure", "421 4.7.0 Try later", "554 5.7.1 Rejected", "452 4.3.1 Full"]
)


def _fault(type_: str, **fields) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({"type": st.just(type_), "probability": probabilities, **fields})


smtp_faults = st.one_of(
    _fault("latency", phase=smtp_phases, dist=st.just("uniform"), min_ms=st.just(1), max_ms=st.just(50)),
    _fault("latency", phase=smtp_phases, dist=st.just("lognormal"), median_ms=st.just(5), sigma=st.just(0.5)),
    _fault("reply", phase=smtp_phases, reply=refusals),
    _fault("disconnect", phase=smtp_phases),
    _fault("tarpit", phase=smtp_phases, byte_delay_ms=st.just(1)),
    _fault(
        "throttle",
        rate=st.floats(0.5, 50),
        burst=st.integers(1, 5),
        key=st.sampled_from(["ip", "sender_domain"]),
    ),
    _fault("greylist", retry_after_s=st.floats(0, 5)),
    _fault("message_cap", max_messages=st.integers(0, 5)),
    _fault("concurrency", max_sessions=st.integers(0, 3)),
)
smtp_fault_mixes = st.lists(smtp_faults, min_size=1, max_size=6)


# -- reports: what happened to one message, as the ledgers would show it ---------------------------------
message_fates = st.fixed_dictionaries(
    {
        "attempts": st.lists(st.booleans(), min_size=1, max_size=3),  # load.submit ok per attempt
        "sut_accepted": st.booleans(),  # a sut.accepted record
        "esp_accepts": st.lists(st.booleans(), max_size=3),  # esp.accepted records, acked per record
        "esp_5xx": st.booleans(),  # an esp.replied 5xx carrying the id
        "esp_4xx": st.integers(0, 2),  # esp.replied 4xx carrying the id
        "sut_bounced": st.booleans(),
        "sut_deferred": st.booleans(),
        "sut_relayed": st.sampled_from([None, 250, 451]),  # a sut.relayed record and its code, or none
        "sut_held": st.booleans(),  # listed in the SUT's queue at the end of the drain (sut.held)
        "stopped": st.booleans(),  # one more attempt, abandoned when the generator stopped
    }
)


# -- load side: open-model shapes (dicts in the shape of mailstorm.scenarios.shapes, as a scenario file has th
_rates = st.floats(0.5, 400, allow_nan=False)
open_shapes = st.one_of(
    st.fixed_dictionaries({"kind": st.just("steady"), "rate": _rates}),
    st.fixed_dictionaries({"kind": st.just("ramp"), "from_rate": _rates, "to_rate": _rates}),
    st.fixed_dictionaries(
        {
            "kind": st.just("step"),
            "start_rate": _rates,
            "step_rate": st.floats(0, 100),
            "step_s": st.floats(0.5, 5),
            "steps": st.integers(1, 5),
        }
    ),
    st.fixed_dictionaries(
        {
            "kind": st.just("spike"),
            "base_rate": _rates,
            "factor": st.floats(1, 10),
            "at_s": st.floats(0, 5),
            "for_s": st.floats(0.1, 5),
        }
    ),
    st.fixed_dictionaries({"kind": st.just("soak"), "rate": _rates, "warmup_s": st.floats(0, 5)}),
    st.fixed_dictionaries(
        {
            "kind": st.just("campaign"),
            "burst_rate": _rates,
            "burst_s": st.floats(0.1, 5),
            "tail_rate": st.floats(0, 50),
            "decay_s": st.floats(0, 5),
        }
    ),
)


# -- hardening: raw SMTP sessions a broken or hostile client sends (tests/hardening/fuzz.py plays them) ---
# A session is a list of steps: ("send", bytes) writes the bytes in one go (several command lines in one
# write is pipelining), ("half_close", b"") shuts the client's sending side and waits for the server.
_valid_commands = st.sampled_from(
    [
        b"EHLO client.test", b"HELO client.test", b"ehlo client.test", b"MAIL FROM:<s@sender.test>",
        b"MAIL FROM:<s@sender.test> SIZE=1000 BODY=8BITMIME", b"MAIL FROM:<>", b"RCPT TO:<r@rcpt.test>",
        b"RCPT TO:<postmaster>", b"RSET", b"NOOP", b"VRFY r@rcpt.test", b"EXPN list", b"HELP", b"QUIT",
        b"STARTTLS", b"AUTH PLAIN AHVzZXIAcGFzcw==", b"AUTH LOGIN", b"AUTH CRAM-MD5", b"BDAT 10 LAST",
        b"DATA", b"MAIL FROM:<s@sender.test> SIZE=99999999999", b"XCLIENT ADDR=1.2.3.4",
    ]
)  # fmt: skip
_verbs = st.sampled_from([b"EHLO", b"HELO", b"MAIL FROM:", b"RCPT TO:", b"VRFY", b"AUTH", b"NOOP", b"MaIl"])
_junk = st.binary(max_size=200)
_long_lines = st.tuples(_verbs, st.integers(10_000, 20_000), st.sampled_from([b"x", b"\x00", b"\xff", b"<"]))
_command_lines = st.one_of(
    _valid_commands,
    st.tuples(_verbs, _junk).map(lambda t: t[0] + b" " + t[1]),  # a known verb, a junk argument (NULs...)
    _junk,
    _long_lines.map(lambda t: t[0] + b" " + t[2] * t[1]),  # 10k+ characters
)
_terminators = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b""])  # bare LF/CR
_lines = st.tuples(_command_lines, _terminators).map(lambda t: t[0] + t[1])
_body_lines = st.one_of(
    st.sampled_from([b"Subject: fuzz", b"", b".", b"..", b". ", b"X-Mailstorm-Id: fuzz-body", b"\x00\x00"]),
    _junk,
    st.integers(10_000, 30_000).map(lambda n: b"y" * n),
)
_bodies = st.lists(st.tuples(_body_lines, _terminators), max_size=12).map(
    lambda ls: b"".join(a + b for a, b in ls)
)
smtp_session_steps = st.one_of(
    _lines.map(lambda b: ("send", b)),
    st.lists(_lines, min_size=2, max_size=10).map(lambda ls: ("send", b"".join(ls))),  # pipelining
    _bodies.map(lambda b: ("send", b"DATA\r\n" + b + b"\r\n.\r\n")),
    st.lists(_lines, max_size=4).map(lambda ls: ("send", b"QUIT\r\n" + b"".join(ls))),  # after QUIT
    st.just(("half_close", b"")),
)
smtp_sessions = st.lists(smtp_session_steps, min_size=1, max_size=10)


# -- hardening: AUTH exchanges a broken or hostile client sends, inside or outside TLS --------------------
_b64_junk = st.binary(max_size=120).map(base64.b64encode)
_auth_lines = st.one_of(
    _b64_junk.map(lambda b: b"AUTH PLAIN " + b),  # a PLAIN blob of random bytes (no NULs, wrong fields...)
    st.just(b"AUTH PLAIN"),  # then the blob on its own line (or junk, or "*")
    st.just(b"AUTH LOGIN"),
    _b64_junk.map(lambda b: b"AUTH LOGIN " + b),
    st.sampled_from([b"*", b"=", b"AUTH XOAUTH2 dG9rZW4=", b"AUTH PLAIN =", b"AUTH", b"AUTH PLAIN a b c"]),
    _b64_junk,  # an answer to a 334 challenge
    st.integers(2_000, 12_000).map(lambda n: b"AUTH PLAIN " + b"A" * n),  # longer than the AUTH line limit
    st.just(b"AUTH PLAIN AGZ1enoAZnV6ei1wYXNz"),  # the right credentials (\0fuzz\0fuzz-pass), again
)
smtp_auth_steps = st.lists(st.tuples(_auth_lines, _terminators), min_size=1, max_size=6).map(
    lambda ls: ("send", b"".join(a + b for a, b in ls))
)
smtp_secure_sessions = st.lists(st.one_of(smtp_session_steps, smtp_auth_steps), min_size=1, max_size=10)
