"""Shared Hypothesis strategies (append only: each package adds its own section)."""

from __future__ import annotations

from hypothesis import strategies as st

# -- fake ESP: fault specs (dicts in the shape of fake_esp.spec.FaultSpec) --------------------------------
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
    }
)


# -- load side: open-model shapes (dicts in the shape of scenarios.shapes, as a scenario file has them) ----
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
