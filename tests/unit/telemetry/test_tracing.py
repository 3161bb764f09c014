from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.telemetry.errors import ConfigError
from meshbus.telemetry.tracing import (
    TraceContext,
    always_off,
    continue_trace,
    extract,
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_b3_multi,
    parse_b3_single,
    parse_traceparent,
    parse_tracestate,
    ratio_sampler,
)

pytestmark = pytest.mark.unit

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"


def test_spec_example_parses() -> None:
    assert parse_traceparent(VALID) == TraceContext(TRACE, SPAN, True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == TraceContext(TRACE, SPAN, False)
    assert parse_traceparent(f"  {VALID}\t") is not None  # surrounding whitespace is tolerated


@pytest.mark.parametrize(
    "value",
    [
        f"ff-{TRACE}-{SPAN}-01",  # version ff is invalid
        f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{SPAN}-01",  # uppercase hex
        f"00-{TRACE}-{SPAN}-0",  # short flags
        f"00-{TRACE}-{SPAN}-01-extra",  # version 00 must be exactly 55 chars
        f"00-{TRACE[:-1]}-{SPAN}-01",  # short trace id
        f"0-{TRACE}-{SPAN}-01",
        f"00_{TRACE}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0g",
        f"cc-{TRACE}-{SPAN}-01x",  # higher version: char 55 must be '-'
        "",
    ],
)
def test_invalid_traceparents_are_ignored(value: str) -> None:
    assert parse_traceparent(value) is None


def test_higher_version_is_parsed_for_its_known_fields() -> None:
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01-what-the-future-holds") == TraceContext(TRACE, SPAN, True)
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-01") == TraceContext(TRACE, SPAN, True)


def test_unknown_flag_bits_are_accepted_but_not_propagated() -> None:
    ctx = parse_traceparent(f"00-{TRACE}-{SPAN}-03")
    assert ctx is not None and ctx.sampled
    assert format_traceparent(ctx.trace_id, ctx.span_id, ctx.sampled).endswith("-01")
    ctx = parse_traceparent(f"00-{TRACE}-{SPAN}-02")
    assert ctx is not None and not ctx.sampled


@given(
    st.integers(1, 2**128 - 1),
    st.integers(1, 2**64 - 1),
    st.booleans(),
)
def test_format_parse_round_trip(trace: int, span: int, sampled: bool) -> None:
    t, s = f"{trace:032x}", f"{span:016x}"
    assert parse_traceparent(format_traceparent(t, s, sampled)) == TraceContext(t, s, sampled)


@given(st.text(max_size=80))
def test_arbitrary_text_never_crashes_and_valid_results_are_well_formed(value: str) -> None:
    ctx = parse_traceparent(value)
    if ctx is not None:
        assert len(ctx.trace_id) == 32 and ctx.trace_id != "0" * 32
        assert len(ctx.span_id) == 16 and ctx.span_id != "0" * 16


def test_tracestate_rules() -> None:
    assert parse_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE") == [
        ("rojo", "00f067aa0ba902b7"),
        ("congo", "t61rcWkgMzE"),
    ]
    assert parse_tracestate("a=1, ,b=2,") == [("a", "1"), ("b", "2")]  # empty members are ignored
    assert parse_tracestate("tenant@system=v") == [("tenant@system", "v")]
    assert parse_tracestate("") == []
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(32))) is not None
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(33))) is None  # max 32 members
    assert parse_tracestate("a=1,a=2") is None  # duplicate key
    assert parse_tracestate("Upper=1") is None
    assert parse_tracestate("a=") is None
    assert parse_tracestate("a=x=y") is None
    assert parse_tracestate("a") is None


def _getter(headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return headers.get


def test_extract_prefers_traceparent_and_ignores_tracestate_without_it() -> None:
    h = {"traceparent": VALID, "tracestate": "rojo=1", "b3": f"{'a' * 32}-{'b' * 16}-0"}
    assert extract(_getter(h)) == TraceContext(TRACE, SPAN, True, "rojo=1")
    assert extract(_getter({"traceparent": VALID, "tracestate": "BAD KEY=1"})) == TraceContext(
        TRACE, SPAN, True
    )
    got = extract(
        _getter({"traceparent": "garbage", "tracestate": "rojo=1", "b3": f"{'a' * 32}-{'b' * 16}-0"})
    )
    assert got == TraceContext("a" * 32, "b" * 16, False)  # falls back to B3, tracestate not used


def test_b3_single() -> None:
    assert parse_b3_single(f"{'a' * 16}-{'b' * 16}") == TraceContext("0" * 16 + "a" * 16, "b" * 16, None)
    assert parse_b3_single(f"{'a' * 32}-{'b' * 16}-d-{'c' * 16}") == TraceContext("a" * 32, "b" * 16, True)
    assert parse_b3_single("0") is False
    assert parse_b3_single("1") is True
    assert parse_b3_single(f"{'a' * 32}-{'b' * 16}-x") is None
    assert parse_b3_single(f"{'0' * 32}-{'b' * 16}-1") is None
    assert parse_b3_single(f"{'a' * 32}-{'b' * 15}-1") is None
    assert parse_b3_single(f"{'a' * 32}-{'b' * 16}-1-zz") is None


def test_b3_multi_and_single_header_precedence() -> None:
    multi = {"x-b3-traceid": "A" * 32, "x-b3-spanid": "b" * 16, "x-b3-sampled": "1"}
    assert parse_b3_multi(_getter(multi)) == TraceContext("a" * 32, "b" * 16, True)
    assert parse_b3_multi(_getter({**multi, "x-b3-sampled": "0", "x-b3-flags": "1"})) == TraceContext(
        "a" * 32, "b" * 16, True
    )  # debug implies sampled
    assert parse_b3_multi(_getter({"x-b3-traceid": "a" * 32})) is None
    single = {**multi, "b3": f"{'c' * 32}-{'d' * 16}-0"}
    assert extract(_getter(single)) == TraceContext("c" * 32, "d" * 16, False)


def test_continue_trace_makes_a_child_of_the_incoming_span() -> None:
    span = continue_trace(_getter({"traceparent": VALID, "tracestate": "rojo=1"}), sampler=always_off)
    assert span.trace_id == TRACE and span.parent_span_id == SPAN
    assert span.span_id != SPAN and len(span.span_id) == 16
    assert span.sampled  # the upstream decision wins over the local sampler
    assert span.headers() == [("traceparent", f"00-{TRACE}-{span.span_id}-01"), ("tracestate", "rojo=1")]
    assert span.b3_headers() == [("b3", f"{TRACE}-{span.span_id}-1-{SPAN}")]


def test_continue_trace_starts_a_trace_and_honours_a_bare_b3_decision() -> None:
    root = continue_trace(_getter({}))
    assert root.parent_span_id is None and root.sampled and len(root.trace_id) == 32
    assert parse_traceparent(root.traceparent()) == TraceContext(root.trace_id, root.span_id, True)
    denied = continue_trace(_getter({"b3": "0"}))
    assert not denied.sampled and denied.parent_span_id is None
    deferred = continue_trace(_getter({"b3": f"{'a' * 32}-{'b' * 16}"}), sampler=always_off)
    assert deferred.trace_id == "a" * 32 and not deferred.sampled


def test_ids_are_valid_and_distinct() -> None:
    ids = {new_span_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 16 and i != "0" * 16 for i in ids)
    assert len(new_trace_id()) == 32


def test_ratio_sampler_is_deterministic_per_trace_id() -> None:
    half = ratio_sampler(0.5)
    assert half("0" * 16 + "0" * 16) and not half("0" * 16 + "f" * 16)
    assert ratio_sampler(1.0)("f" * 32) and not ratio_sampler(0.0)("0" * 31 + "1")
    rate = sum(ratio_sampler(0.25)(new_trace_id()) for _ in range(4000)) / 4000
    assert 0.2 < rate < 0.3
    with pytest.raises(ConfigError):
        ratio_sampler(1.5)
