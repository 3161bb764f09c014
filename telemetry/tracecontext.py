"""Trace context on HTTP headers: W3C Trace Context and B3 (single and multi header), sans-IO.

``extract(hdict)`` reads what a request carries (lowercase header dict): W3C ``traceparent`` (+
``tracestate``) first, then B3 single (``b3``), then B3 multi (``x-b3-traceid``, ``x-b3-spanid``,
``x-b3-sampled``, ``x-b3-flags``). What does not parse is ignored, as the W3C spec asks (a new trace
starts). The result says in which format it came, so the proxy answers in the same one.

Specs: https://www.w3.org/TR/trace-context/ (version 00; a higher version is read by its first four
fields, as the spec asks of a version it does not know), https://github.com/openzipkin/b3-propagation
(64-bit trace ids are left-padded to 128 bits; ``d`` = debug implies sampled; ``b3: 0`` / ``1`` /
``d`` alone is a sampling decision without ids).

Ids are kept as lowercase hex strings, the form every header uses: nothing is converted per hop
unless a span is made (the SDK wants ints).
"""

from __future__ import annotations

import os
import re
from binascii import hexlify
from ssl import RAND_bytes
from typing import Final

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
B3: Final = "b3"
X_B3_TRACEID: Final = "x-b3-traceid"
X_B3_SPANID: Final = "x-b3-spanid"
X_B3_PARENTSPANID: Final = "x-b3-parentspanid"
X_B3_SAMPLED: Final = "x-b3-sampled"
X_B3_FLAGS: Final = "x-b3-flags"

TRACE_HEADERS: Final[frozenset[str]] = frozenset(
    {TRACEPARENT, B3, X_B3_TRACEID, X_B3_SPANID, X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_FLAGS}
)
"""The headers the proxy rewrites when it starts a span (tracestate passes as received)."""

W3C: Final = 1
B3_SINGLE: Final = 2
B3_MULTI: Final = 3

SAMPLED: Final = 1
NOT_SAMPLED: Final = 0
UNDECIDED: Final = -1

_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_LOWER_HEX: Final = b"0123456789abcdef"
# A traceparent's first 55 bytes with each lowercase hex digit made "0", "-" kept and any other byte
# "x": well formed, they read as _SHAPE. A table without deletions is the cheap translate: one with
# deletions builds a 256-entry table each call (callgrind: ~1,500 instructions a request, now ~300).
_HEX_SHAPE_TABLE: Final = bytes(48 if c in _LOWER_HEX else 45 if c == 45 else 120 for c in range(256))
_SHAPE: Final = b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-00"
_HEX_RE: Final = re.compile(r"[0-9a-f]+\Z")
_ODD_HEX: Final = "13579bdf"


class TraceContext:
    """An incoming trace context: ``trace_id`` (32 hex), ``span_id`` (16 hex: the caller's span, our
    parent), ``sampled`` (SAMPLED, NOT_SAMPLED or UNDECIDED), ``fmt`` (W3C, B3_SINGLE, B3_MULTI)."""

    __slots__ = ("fmt", "sampled", "span_id", "trace_id", "tracestate")

    def __init__(
        self, trace_id: str, span_id: str, sampled: int, fmt: int, tracestate: str | None = None
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.sampled = sampled
        self.fmt = fmt
        self.tracestate = tracestate

    def __repr__(self) -> str:
        return f"TraceContext({self.trace_id}, {self.span_id}, sampled={self.sampled}, fmt={self.fmt})"


def extract(hdict: dict[str, str]) -> TraceContext | None:
    """The trace context a request carries, or None (none, or none that parses)."""
    tp = hdict.get(TRACEPARENT)
    if tp is not None:
        ctx = _traceparent(tp)
        if ctx is not None:
            ctx.tracestate = hdict.get(TRACESTATE)
            return ctx
    b3 = hdict.get(B3)
    if b3 is not None:
        ctx = _b3_single(b3)
        if ctx is not None:
            return ctx
    if X_B3_TRACEID in hdict or X_B3_SAMPLED in hdict or X_B3_FLAGS in hdict:
        return _b3_multi(hdict)
    return None


def _traceparent(value: str) -> TraceContext | None:
    """``version-traceid-parentid-flags`` (lowercase hex, 2-32-16-2), and after a version other than
    00, more fields after a dash. By slices and one ``bytes.translate``, not a regex: this runs on
    every request a sidecar forwards to another (compiled, ~0.25 us where the regex took ~0.6 us)."""
    # What a proxy or an SDK sends, a version-00 value of exactly 55 characters, is not stripped: a
    # blank at either end fails the shape below as it would have failed the length once stripped
    # (compiled, ``strip`` is a call by name, and the head's value carries none: ~300 instructions).
    v = value if len(value) == 55 else value.strip()
    if len(v) < 55 or not v.isascii():
        return None
    b = v.encode("ascii")
    # The first 55 characters: lowercase hex but for three dashes, at 2, 35 and 52.
    if (b if len(b) == 55 else b[:55]).translate(_HEX_SHAPE_TABLE) != _SHAPE:
        return None
    # the version's two digits as bytes (hex digits, by the shape): no slice, no str compare
    v0 = b[0]
    v1 = b[1]
    if len(b) > 55 and (b[55] != 45 or (v0 == 48 and v1 == 48)):  # "00" ends at 55
        return None
    if v0 == 102 and v1 == 102:  # "ff", an invalid version
        return None
    trace_id = v[3:35]
    span_id = v[36:52]
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    # the sampled flag is the flags' low bit: the last hex digit's (int(flags, 16) cost ~500 instructions)
    return TraceContext(trace_id, span_id, SAMPLED if v[54] in _ODD_HEX else NOT_SAMPLED, W3C)


def _sampling(value: str) -> int:
    if value in ("1", "d", "true"):
        return SAMPLED
    if value in ("0", "false"):
        return NOT_SAMPLED
    return UNDECIDED


def _trace_id(value: str) -> str | None:
    v = value.lower()
    if len(v) == 16:
        v = "0" * 16 + v
    if len(v) != 32 or not _HEX_RE.match(v) or v == _ZERO_TRACE:
        return None
    return v


def _span_id(value: str) -> str | None:
    v = value.lower()
    if len(v) != 16 or not _HEX_RE.match(v) or v == _ZERO_SPAN:
        return None
    return v


def _b3_single(value: str) -> TraceContext | None:
    parts = value.strip().split("-")
    if len(parts) == 1:  # a sampling decision only: a new trace, with that decision
        s = _sampling(parts[0])
        return None if s == UNDECIDED else TraceContext(new_trace_id(), "", s, B3_SINGLE)
    trace_id = _trace_id(parts[0])
    span_id = _span_id(parts[1])
    if trace_id is None or span_id is None:
        return None
    sampled = _sampling(parts[2]) if len(parts) > 2 else UNDECIDED
    return TraceContext(trace_id, span_id, sampled, B3_SINGLE)


def _b3_multi(hdict: dict[str, str]) -> TraceContext | None:
    sampled = SAMPLED if hdict.get(X_B3_FLAGS) == "1" else _sampling(hdict.get(X_B3_SAMPLED, "").lower())
    raw_trace = hdict.get(X_B3_TRACEID)
    if raw_trace is None:
        return None if sampled == UNDECIDED else TraceContext(new_trace_id(), "", sampled, B3_MULTI)
    trace_id = _trace_id(raw_trace)
    span_id = _span_id(hdict.get(X_B3_SPANID, ""))
    if trace_id is None or span_id is None:
        return None
    return TraceContext(trace_id, span_id, sampled, B3_MULTI)


# --- what the proxy sends on ---------------------------------------------------------------------------
def random_hex(nbytes: int) -> bytes:
    """``2 * nbytes`` random lowercase hex digits (ASCII) from OpenSSL's CSPRNG, as Envoy draws its
    request ids (``RAND_bytes``): unpredictable, and cheaper than the ``random`` module's generator,
    whose ``randbytes`` (an int of ``8 * nbytes`` bits made, then turned into bytes) cost ~38
    instructions a byte against ~5 (callgrind); ``hexlify`` gives bytes, no str to encode."""
    return hexlify(RAND_bytes(nbytes))


class HexPool:
    """Random lowercase hex digits (:func:`random_hex`), drawn 1,024 bytes at a time.

    A span id for a caller's trace needs 16 (a new context comes whole from `NewTraces`); drawing
    ids one at a time cost ~1,400 instructions per ``getrandbits`` (an int made from a byte array)
    plus the formatting of the int, several per cent of the proxy's Python per request. From the
    pool an id is a slice.
    A forked worker empties its inherited pool (``os.register_at_fork``), so workers never share ids.
    """

    __slots__ = ("digits", "pos")

    def __init__(self) -> None:
        self.digits = ""
        self.pos = 0

    def take(self, n: int) -> str:
        """``n`` (at most 2,048) random hex digits."""
        pos = self.pos
        end = pos + n
        if end > len(self.digits):
            self.digits = random_hex(1024).decode("ascii")
            pos = 0
            end = n
        self.pos = end
        return self.digits[pos:end]

    def reset(self) -> None:
        self.digits = ""
        self.pos = 0


HEX: Final = HexPool()
os.register_at_fork(after_in_child=HEX.reset)


def new_trace_id() -> str:
    """128 random bits as 32 hex digits (never all zero)."""
    h = HEX.take(32)
    return h if h != _ZERO_TRACE else new_trace_id()


def new_span_id() -> str:
    h = HEX.take(16)
    return h if h != _ZERO_SPAN else new_span_id()


def new_ids() -> tuple[str, str]:
    """A new trace id and span id."""
    return new_trace_id(), new_span_id()


class HexRecords:
    """Random lowercase hex records (:func:`random_hex`) of ``size`` characters, drawn ``per_draw`` at
    a time as one str and its ASCII bytes: a record's text is a slice of the one and its bytes for a
    head line a slice of the other (no encode, no format per record). A subclass writes its fixed
    characters (dashes, version digits) over their places in all records at once (`_lay_out`: slice
    assignments on the draw's bytearray). A forked worker must drop the records it inherited
    (``os.register_at_fork(after_in_child=pool.reset)``), so that workers never share one."""

    __slots__ = ("ids", "per_draw", "pos", "raw", "size")

    def __init__(self, size: int, per_draw: int) -> None:
        self.size = size
        self.per_draw = per_draw  # size * per_draw is even: two digits a random byte
        self.ids = ""
        self.raw = b""
        self.pos = 0

    def next_record(self) -> int:
        """Where the next record starts in ``ids`` and ``raw``."""
        pos = self.pos
        if pos >= len(self.ids):
            buf = bytearray(random_hex(self.size * self.per_draw // 2))
            self._lay_out(buf, self.per_draw)
            raw = self.raw = bytes(buf)
            self.ids = raw.decode("ascii")
            pos = 0
        self.pos = pos + self.size
        return pos

    def _lay_out(self, buf: bytearray, n: int) -> None:
        """Write the fixed characters of ``buf``'s ``n`` records (none here: plain hex)."""

    def reset(self) -> None:
        self.ids = ""
        self.raw = b""
        self.pos = 0


_TRACE_RECORD: Final = 49  # a trace id, "-" and a span id, as a traceparent carries them
_TP_START: Final = b"traceparent: 00-"
_TP_SAMPLED: Final = b"-01\r\n"
_TP_UNSAMPLED: Final = b"-00\r\n"


class NewTraces(HexRecords):
    """New trace contexts for requests that came without one: a trace id, a span id and the
    ``traceparent`` line that sends them on, drawn 64 at a time (1,568 random bytes).

    A record is the ids as the line carries them, each record's 33rd digit made a dash: a context's
    ids are two slices of one str and its line three bytes joined. Made one id at a time (a HexPool
    take each) and formatted as an f-string then encoded, a context cost ~400-600 instructions more
    (callgrind, the client sidecar of bench/chain_callgrind.py: HopTelemetry.begin 3,779 -> 3,372).
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_TRACE_RECORD, 64)

    def take(self, sampled: bool) -> tuple[str, str, bytes]:
        """A new trace id and span id (neither all zero) and their line,
        ``traceparent: 00-{trace id}-{span id}-{01 if sampled else 00}\\r\\n``."""
        while True:
            pos = self.next_record()
            end = pos + _TRACE_RECORD
            ids = self.ids
            trace_id = ids[pos : pos + 32]
            span_id = ids[pos + 33 : end]
            if trace_id != _ZERO_TRACE and span_id != _ZERO_SPAN:
                return (
                    trace_id,
                    span_id,
                    _TP_START + self.raw[pos:end] + (_TP_SAMPLED if sampled else _TP_UNSAMPLED),
                )

    def _lay_out(self, buf: bytearray, n: int) -> None:
        buf[32::_TRACE_RECORD] = b"-" * n


NEW_TRACES: Final = NewTraces()
os.register_at_fork(after_in_child=NEW_TRACES.reset)


def traceparent(trace_id: str, span_id: str, sampled: bool) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def propagation_headers(
    fmt: int, trace_id: str, span_id: str, parent_id: str, sampled: bool
) -> list[tuple[str, str]]:
    """The headers that carry (trace, span) on: always ``traceparent``, and the B3 form the request
    came in with (so an app that reads B3 keeps reading it). ``parent_id`` is the caller's span."""
    out = [(TRACEPARENT, traceparent(trace_id, span_id, sampled))]
    flag = "1" if sampled else "0"
    if fmt == B3_SINGLE:
        out.append((B3, f"{trace_id}-{span_id}-{flag}" + (f"-{parent_id}" if parent_id else "")))
    elif fmt == B3_MULTI:
        out.append((X_B3_TRACEID, trace_id))
        out.append((X_B3_SPANID, span_id))
        if parent_id:
            out.append((X_B3_PARENTSPANID, parent_id))
        out.append((X_B3_SAMPLED, flag))
    return out


_RAW_TRACE: Final = re.compile(
    rb"\r\n(?:traceparent|b3|x-b3-(?:traceid|spanid|parentspanid|sampled|flags)):[^\r]*", re.IGNORECASE
)


def strip_trace_lines(raw: bytes, hdict: dict[str, str]) -> bytes:
    """``raw`` (a request head as received, without its blank line) less the caller's trace header
    lines (TRACE_HEADERS, whatever their case), whose names ``hdict`` has lowercased; the head has
    one line per name (the exchange passes through only such heads). When the caller sent a
    lowercase traceparent and no B3 header, the common case (what proxies and the OpenTelemetry SDKs
    send), its line is cut after one search of the head: the regex, which tries every line, cost
    ~5,000 instructions a sampled request; lowering the head first to search it cost as much. The
    search runs on the head as latin-1 str, one character a byte so its indexes are the bytes': compiled,
    str.find is a direct call where bytes.find goes by name and parses its arguments (callgrind: two
    bytes.find ~2,500 instructions, the decode and two str.find ~1,150)."""
    if (
        B3 in hdict
        or X_B3_TRACEID in hdict
        or X_B3_SPANID in hdict
        or X_B3_SAMPLED in hdict
        or X_B3_FLAGS in hdict
        or X_B3_PARENTSPANID in hdict
    ):
        return _RAW_TRACE.sub(b"", raw)
    text = raw.decode("latin-1")
    i = text.find("\r\ntraceparent:")
    if i < 0:  # another spelling, or none
        return _RAW_TRACE.sub(b"", raw)
    j = text.find("\r", i + 2)
    return raw[:i] + raw[j:] if j >= 0 else raw[:i]


def header_lines(headers: list[tuple[str, str]]) -> bytes:
    """``name: value\\r\\n`` lines, for a request head forwarded as received (latin-1, as HTTP/1.1)."""
    return "".join(f"{n}: {v}\r\n" for n, v in headers).encode("latin-1")
