"""Trace context on headers: W3C traceparent/tracestate, B3 single and multi, and what goes on."""

from __future__ import annotations

import os
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.telemetry.tracecontext import (
    B3_MULTI,
    B3_SINGLE,
    NEW_TRACES,
    NOT_SAMPLED,
    SAMPLED,
    TRACE_HEADERS,
    UNDECIDED,
    W3C,
    extract,
    header_lines,
    new_ids,
    new_span_id,
    new_trace_id,
    propagation_headers,
    strip_trace_lines,
    traceparent,
)

pytestmark = pytest.mark.unit

T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"


def test_w3c_traceparent_and_tracestate() -> None:
    ctx = extract({"traceparent": f"00-{T}-{S}-01", "tracestate": "congo=t61rcWkgMzE"})
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.fmt, ctx.tracestate) == (
        T,
        S,
        SAMPLED,
        W3C,
        "congo=t61rcWkgMzE",
    )
    ctx = extract({"traceparent": f"00-{T}-{S}-00"})
    assert ctx is not None and ctx.sampled == NOT_SAMPLED


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{S}-01",  # all-zero trace id
        f"00-{T}-{'0' * 16}-01",  # all-zero span id
        f"ff-{T}-{S}-01",  # version ff is invalid
        f"00-{T.upper()}-{S}-01",  # hex must be lowercase
        f"00-{T}-{S}-01-extra",  # version 00 has exactly four fields
        "garbage",
    ],
)
def test_invalid_traceparent_starts_a_new_trace(value: str) -> None:
    assert extract({"traceparent": value}) is None


# The W3C grammar as a regex: the oracle for the parser, which reads the header by slices (what
# follows a future version's fourth field may be anything: DOTALL).
_W3C = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?\Z", re.DOTALL)


def _by_regex(value: str) -> tuple[str, str, int] | None:
    m = _W3C.match(value.strip())
    if m is None:
        return None
    version, trace_id, span_id, flags, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == "0" * 32 or span_id == "0" * 16:
        return None
    return trace_id, span_id, int(flags, 16) & 1


_hexish = st.text(alphabet="0123456789abcdefABx-", max_size=3)


@given(
    st.one_of(
        st.text(max_size=70),
        st.tuples(
            st.sampled_from(["00", "01", "ff", "0g", "0", "000"]),
            st.sampled_from([T, "0" * 32, T[:31], T + "a", T.upper(), T[:10] + "-" + T[11:]]),
            st.sampled_from([S, "0" * 16, S[:15], S[:5] + "-" + S[6:]]),
            st.sampled_from(["00", "01", "03", "0x", "1", "ff"]),
            _hexish,
            st.sampled_from(["", " ", "\t"]),
        ).map(lambda p: f"{p[5]}{p[0]}-{p[1]}-{p[2]}-{p[3]}{p[4]}{p[5]}"),
    )
)
def test_traceparent_parser_agrees_with_the_w3c_grammar(value: str) -> None:
    ctx = extract({"traceparent": value})
    got = None if ctx is None else (ctx.trace_id, ctx.span_id, ctx.sampled)
    assert got == _by_regex(value)


def test_new_ids_are_hex_of_the_right_lengths_and_differ() -> None:
    seen = set()
    for _ in range(100):
        trace_id, span_id = new_ids()
        assert len(trace_id) == 32 and len(span_id) == 16
        assert not (trace_id + span_id).strip("0123456789abcdef")
        seen.add(trace_id)
    assert len(seen) == 100


def test_a_future_version_is_read_by_its_first_four_fields() -> None:
    ctx = extract({"traceparent": f"01-{T}-{S}-01-whatever"})
    assert ctx is not None and ctx.trace_id == T


def test_b3_single_header() -> None:
    ctx = extract({"b3": f"{T}-{S}-1-05e3ac9a4f6e3b90"})
    assert ctx is not None and (ctx.trace_id, ctx.span_id, ctx.sampled, ctx.fmt) == (T, S, SAMPLED, B3_SINGLE)
    short = extract({"b3": f"a3ce929d0e0e4736-{S}"})  # 64-bit trace id, no decision
    assert (
        short is not None and short.trace_id == "0" * 16 + "a3ce929d0e0e4736" and short.sampled == UNDECIDED
    )
    debug = extract({"b3": f"{T}-{S}-d"})
    assert debug is not None and debug.sampled == SAMPLED
    deny = extract({"b3": "0"})  # a decision alone: a new trace that is not sampled
    assert deny is not None and deny.sampled == NOT_SAMPLED and deny.span_id == ""


def test_b3_multi_headers() -> None:
    ctx = extract({"x-b3-traceid": T, "x-b3-spanid": S, "x-b3-sampled": "1"})
    assert ctx is not None and (ctx.sampled, ctx.fmt) == (SAMPLED, B3_MULTI)
    flags = extract({"x-b3-traceid": T, "x-b3-spanid": S, "x-b3-flags": "1"})
    assert flags is not None and flags.sampled == SAMPLED
    assert extract({"x-b3-traceid": T}) is None  # no span id


def test_w3c_wins_over_b3() -> None:
    ctx = extract({"traceparent": f"00-{T}-{S}-00", "b3": f"{'1' * 32}-{S}-1"})
    assert ctx is not None and ctx.fmt == W3C and ctx.trace_id == T


def test_propagation_answers_in_the_format_that_came() -> None:
    w3c = propagation_headers(W3C, T, S, "", True)
    assert w3c == [("traceparent", f"00-{T}-{S}-01")]
    single = dict(propagation_headers(B3_SINGLE, T, S, "05e3ac9a4f6e3b90", False))
    assert single["b3"] == f"{T}-{S}-0-05e3ac9a4f6e3b90" and single["traceparent"].endswith("-00")
    multi = dict(propagation_headers(B3_MULTI, T, S, "05e3ac9a4f6e3b90", True))
    assert multi["x-b3-spanid"] == S and multi["x-b3-parentspanid"] == "05e3ac9a4f6e3b90"
    assert multi["x-b3-sampled"] == "1"
    assert (
        header_lines([("traceparent", traceparent(T, S, True))]) == f"traceparent: 00-{T}-{S}-01\r\n".encode()
    )


def test_new_ids_are_well_formed_and_parse_back() -> None:
    t, s = new_trace_id(), new_span_id()
    assert len(t) == 32 and len(s) == 16 and t != new_trace_id()
    ctx = extract({"traceparent": traceparent(t, s, False)})
    assert ctx is not None and (ctx.trace_id, ctx.span_id) == (t, s)


def test_new_traces_carry_their_ids_in_their_traceparent_lines() -> None:
    # across several draws (64 contexts each), both decisions
    taken = [NEW_TRACES.take(i % 3 == 0) for i in range(300)]
    for i, (trace_id, span_id, line) in enumerate(taken):
        assert len(trace_id) == 32 and len(span_id) == 16
        assert not (trace_id + span_id).strip("0123456789abcdef")
        flags = "01" if i % 3 == 0 else "00"
        assert line == f"traceparent: 00-{trace_id}-{span_id}-{flags}\r\n".encode()
        ctx = extract({"traceparent": line[13:-2].decode()})
        assert ctx is not None and (ctx.trace_id, ctx.span_id) == (trace_id, span_id)
        assert ctx.sampled == (SAMPLED if i % 3 == 0 else NOT_SAMPLED)
    assert len({t for t, _, _ in taken}) == 300 and len({s for _, s, _ in taken}) == 300


def test_forked_workers_start_different_traces() -> None:
    NEW_TRACES.take(False)  # the parent's contexts have been drawn
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a worker, as meshbus-proxy --workers N forks them
        os.write(write, NEW_TRACES.take(False)[2])
        os._exit(0)
    os.close(write)
    child = os.read(read, 128)
    os.close(read)
    os.waitpid(pid, 0)
    assert child.startswith(b"traceparent: 00-") and child != NEW_TRACES.take(False)[2]


# What the exchange removed from a pass-through head with one regex before strip_trace_lines existed.
_REFERENCE = re.compile(
    rb"\r\n(?:traceparent|b3|x-b3-(?:traceid|spanid|parentspanid|sampled|flags)):[^\r]*", re.IGNORECASE
)
_TP = f"00-{T}-{S}-01"


@pytest.mark.parametrize(
    "lines",
    [
        [("Host", "a"), ("traceparent", _TP), ("x-other", "1")],
        [("TraceParent", _TP), ("Host", "a")],  # the client's spelling; the first line
        [("Host", "a"), ("TRACEPARENT", _TP)],  # the last line
        [("Host", "a"), ("traceparent-x", "1"), ("x-traceparent", "2")],  # names that only contain it
        [("Host", "a"), ("tracestate", "k=v"), ("traceparent", _TP)],  # tracestate passes
        [("Host", "a"), ("traceparent", _TP), ("X-B3-TraceId", T), ("x-b3-spanid", S), ("x-b3-sampled", "1")],
        [("Host", "a"), ("b3", f"{T}-{S}-1"), ("traceparent", _TP)],
        [("Host", "a"), ("x-b3-flags", "1")],
        [("Host", "a")],
    ],
)
def test_strip_trace_lines_removes_what_the_regex_over_every_line_removed(
    lines: list[tuple[str, str]],
) -> None:
    raw = b"GET / HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines).encode()
    hdict = {n.lower(): v for n, v in lines}
    out = strip_trace_lines(raw, hdict)
    assert out == _REFERENCE.sub(b"", raw)
    kept = [line.partition(b":")[0].lower() for line in out.split(b"\r\n")[1:-1]]
    assert kept == [n.lower().encode() for n, _ in lines if n.lower() not in TRACE_HEADERS]


def test_the_sampled_flag_is_the_low_bit_of_every_flags_byte() -> None:
    for flags in range(256):
        ctx = extract({"traceparent": f"00-{T}-{S}-{flags:02x}"})
        assert ctx is not None and ctx.sampled == (SAMPLED if flags & 1 else NOT_SAMPLED), flags
