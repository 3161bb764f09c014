"""Sans-IO trace-context propagation: W3C ``traceparent``/``tracestate`` and B3, plus the proxy's hop.

Rules implemented (w3c/trace-context ``20-http_request_header_format.md``; openzipkin/b3-propagation):

- ``traceparent`` is ``version-traceid-parentid-flags``, lowercase hex only. Version ``ff`` is invalid.
  Version ``00`` must be exactly 55 chars. A higher version is parsed only when it is at least 55 chars
  and, if longer, char 55 is ``-`` (its extra fields are ignored). An all-zero trace id or parent id is
  invalid. Any invalid header is ignored as if absent, and then ``tracestate`` is not parsed.
- ``tracestate`` has at most 32 ``key=value`` members with unique keys; a list that breaks a rule is
  dropped whole. It is forwarded unchanged: the proxy adds no vendor entry of its own.
- Only the sampled bit (0x01) of trace-flags is propagated; other bits are reserved and sent as 0.
- B3: the single ``b3`` header wins over the ``x-b3-*`` headers. A 64-bit trace id is left-padded to 128
  bits. ``d`` (debug) and ``x-b3-flags: 1`` mean sampled; an absent decision stays undecided.
- Precedence when a request carries several formats: ``traceparent``, then ``b3``, then ``x-b3-*``.

Header look-ups go through ``get(name) -> str | None`` with lowercase names (e.g. ``headers.get``), so
this module needs no particular headers type. ID generation uses :func:`random.getrandbits`, which
CPython reseeds in a forked child, so ``--workers`` processes never share an id sequence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from random import getrandbits
from typing import Final, NamedTuple

from meshbus.telemetry.errors import ConfigError

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
B3: Final = "b3"
X_B3_TRACEID: Final = "x-b3-traceid"
X_B3_SPANID: Final = "x-b3-spanid"
X_B3_PARENTSPANID: Final = "x-b3-parentspanid"
X_B3_SAMPLED: Final = "x-b3-sampled"
X_B3_FLAGS: Final = "x-b3-flags"

FLAG_SAMPLED: Final = 0x01
MAX_TRACESTATE_MEMBERS: Final = 32

_INVALID_TRACE_ID: Final = "0" * 32
_INVALID_SPAN_ID: Final = "0" * 16
_TRACEPARENT_RE: Final = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_ODD_HEX: Final = frozenset("13579bdf")
_TS_KEY_RE: Final = re.compile(
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})\Z"
)
# value: 1-256 printable ASCII chars except ',' and '=', the last one not a space.
_TS_VALUE_RE: Final = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]\Z")
_HEX16_OR_32_RE: Final = re.compile(r"(?:[0-9a-f]{16}|[0-9a-f]{32})\Z")
_HEX16_RE: Final = re.compile(r"[0-9a-f]{16}\Z")

# NamedTuple construction goes through a Python-level __new__; tuple.__new__ skips it (~80 ns saved).
_new_tuple: Final = tuple.__new__

HeaderGetter = Callable[[str], "str | None"]
Sampler = Callable[[str], bool]


class TraceContext(NamedTuple):
    """A propagated span context as received from (or sent to) a peer."""

    trace_id: str
    """32 lowercase hex chars, not all zero."""
    span_id: str
    """16 lowercase hex chars, not all zero: the sender's span, i.e. the receiver's parent."""
    sampled: bool | None
    """The upstream sampling decision; ``None`` when the sender deferred it (B3 only)."""
    tracestate: str | None = None
    """Validated ``tracestate`` header, forwarded as received."""


# --- W3C -------------------------------------------------------------------------------------------------
def parse_traceparent(value: str) -> TraceContext | None:
    """Parse a ``traceparent`` header; ``None`` when it is invalid (the header is then ignored)."""
    n = len(value)
    if n != 55:  # the common case (version 00, no padding) skips the strip
        value = value.strip(" \t")
        n = len(value)
        if n < 55 or (n > 55 and value[55] != "-"):
            return None
    if _TRACEPARENT_RE.match(value) is None:
        return None
    version = value[:2]
    if version == "ff" or (version == "00" and n != 55):
        return None
    trace_id, span_id = value[3:35], value[36:52]
    if trace_id == _INVALID_TRACE_ID or span_id == _INVALID_SPAN_ID:
        return None
    # sampled = bit 0x01 of the flags
    return _new_tuple(TraceContext, (trace_id, span_id, value[54] in _ODD_HEX, None))


def format_traceparent(trace_id: str, span_id: str, sampled: bool | None) -> str:
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}"


def parse_tracestate(value: str) -> list[tuple[str, str]] | None:
    """Members of a ``tracestate`` header in order; ``[]`` when empty, ``None`` when invalid."""
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    for raw in value.split(","):
        item = raw.strip(" \t")
        if not item:
            continue  # empty list members are allowed and ignored
        key, eq, val = item.partition("=")
        if not eq or not _TS_KEY_RE.match(key) or not _TS_VALUE_RE.match(val) or key in seen:
            return None
        seen.add(key)
        members.append((key, val))
        if len(members) > MAX_TRACESTATE_MEMBERS:
            return None
    return members


def format_tracestate(members: list[tuple[str, str]]) -> str:
    return ",".join(f"{k}={v}" for k, v in members)


def _valid_tracestate(value: str | None) -> str | None:
    if not value:
        return None
    members = parse_tracestate(value)
    return format_tracestate(members) if members else None


# --- B3 --------------------------------------------------------------------------------------------------
def _b3_trace_id(value: str) -> str | None:
    value = value.strip().lower()
    if not _HEX16_OR_32_RE.match(value):
        return None
    value = value.rjust(32, "0")
    return None if value == _INVALID_TRACE_ID else value


def _b3_span_id(value: str) -> str | None:
    value = value.strip().lower()
    if not _HEX16_RE.match(value) or value == _INVALID_SPAN_ID:
        return None
    return value


_B3_SAMPLING: Final[dict[str, bool]] = {"1": True, "d": True, "0": False, "true": True, "false": False}


def parse_b3_single(value: str) -> TraceContext | bool | None:
    """``b3`` header: a context, a bare sampling decision (``b3: 0``), or ``None`` if invalid."""
    parts = value.strip().lower().split("-")
    if len(parts) == 1:
        return _B3_SAMPLING.get(parts[0])
    if len(parts) > 4:
        return None
    trace_id, span_id = _b3_trace_id(parts[0]), _b3_span_id(parts[1])
    if trace_id is None or span_id is None:
        return None
    sampled: bool | None = None
    if len(parts) >= 3:
        if parts[2] not in ("0", "1", "d"):
            return None
        sampled = _B3_SAMPLING[parts[2]]
    if len(parts) == 4 and _b3_span_id(parts[3]) is None:
        return None
    return TraceContext(trace_id, span_id, sampled)


def parse_b3_multi(get: HeaderGetter) -> TraceContext | None:
    """``x-b3-*`` headers; ``None`` when trace or span id is missing or invalid."""
    raw_trace, raw_span = get(X_B3_TRACEID), get(X_B3_SPANID)
    if raw_trace is None or raw_span is None:
        return None
    trace_id, span_id = _b3_trace_id(raw_trace), _b3_span_id(raw_span)
    if trace_id is None or span_id is None:
        return None
    sampled: bool | None = None
    if (get(X_B3_FLAGS) or "").strip() == "1":
        sampled = True  # debug implies sampled
    else:
        raw_sampled = get(X_B3_SAMPLED)
        if raw_sampled is not None:
            sampled = _B3_SAMPLING.get(raw_sampled.strip().lower())
    return TraceContext(trace_id, span_id, sampled)


# --- extraction and the proxy hop -----------------------------------------------------------------------
def extract(get: HeaderGetter) -> TraceContext | None:
    """The incoming context: ``traceparent`` (+ ``tracestate``), else ``b3``, else ``x-b3-*``."""
    tp = get(TRACEPARENT)
    if tp is not None:
        ctx = parse_traceparent(tp)
        if ctx is not None:
            ts = get(TRACESTATE)
            return ctx._replace(tracestate=_valid_tracestate(ts)) if ts else ctx
    b3 = get(B3)
    if b3 is not None:
        single = parse_b3_single(b3)
        if isinstance(single, TraceContext):
            return single
    return parse_b3_multi(get)


def new_trace_id() -> str:
    v = getrandbits(128)
    while not v:  # pragma: no cover - 2**-128
        v = getrandbits(128)
    return "%032x" % v  # noqa: UP031 - faster than an f-string here


def new_span_id() -> str:
    v = getrandbits(64)
    while not v:  # pragma: no cover - 2**-64
        v = getrandbits(64)
    return "%016x" % v  # noqa: UP031 - faster than an f-string here


def always_on(trace_id: str) -> bool:
    return True


def always_off(trace_id: str) -> bool:
    return False


def ratio_sampler(ratio: float) -> Sampler:
    """Sample ``ratio`` of new traces, decided by the trace id (as OTel's TraceIdRatioBased does), so
    every hop that makes the decision for the same trace agrees."""
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"sampling ratio must be in [0, 1] (got {ratio!r})")
    bound = round(ratio * (1 << 64))

    def sample(trace_id: str) -> bool:
        return int(trace_id[16:], 16) < bound

    return sample


class ProxySpan(NamedTuple):
    """This hop's span for a proxied request: what to record, and what to send upstream."""

    trace_id: str
    span_id: str
    """New id for this hop; upstream sees it as its parent."""
    parent_span_id: str | None
    """The incoming span id, ``None`` when this hop started the trace."""
    sampled: bool
    tracestate: str | None

    def traceparent(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.sampled)

    def headers(self) -> list[tuple[str, str]]:
        """W3C headers to set on the upstream request (replacing any incoming ones)."""
        out = [(TRACEPARENT, self.traceparent())]
        if self.tracestate:
            out.append((TRACESTATE, self.tracestate))
        return out

    def b3_headers(self) -> list[tuple[str, str]]:
        """The same context as a single ``b3`` header, for peers that only read B3."""
        value = f"{self.trace_id}-{self.span_id}-{'1' if self.sampled else '0'}"
        if self.parent_span_id:
            value += f"-{self.parent_span_id}"
        return [(B3, value)]


def continue_trace(get: HeaderGetter, sampler: Sampler = always_on) -> ProxySpan:
    """Continue the incoming trace with a new child span, or start a trace when none arrived.

    An upstream decision is kept; the sampler decides only for new traces and deferred (B3) ones. A
    bare ``b3: 0``/``b3: 1`` carries a decision without ids: a new trace is started honouring it.
    """
    ctx = extract(get)
    if ctx is not None:
        trace_id, parent, sampled, tracestate = ctx
        if sampled is None:
            sampled = sampler(trace_id)
        return _new_tuple(ProxySpan, (trace_id, new_span_id(), parent, sampled, tracestate))
    trace_id = new_trace_id()
    decision: bool | None = None
    b3 = get(B3)
    if b3 is not None:
        single = parse_b3_single(b3)
        if isinstance(single, bool):
            decision = single
    return ProxySpan(trace_id, new_span_id(), None, sampler(trace_id) if decision is None else decision, None)
