"""Access logs: the per-request record, a bounded in-memory queue, and the JSON/text line formats.

Request-path contract: ``access_log.log_row(row)`` (or ``add`` of the row's items) is a length check and
a list append, plus, when the
writer asked for it (``AccessLogWriter(per_request=True)`` sets ``AccessLogger.line``), the row's
line formatted at once (~1.5 us compiled);
no lock is taken, no I/O happens. When the queue is full the *new* record is dropped and
``meshbus_telemetry_dropped_total{signal="access_log"}`` goes up, so a slow sink can never slow or
block requests. A writer off the request path (``meshbus.telemetry.accesslog_writer``) calls
``drain()`` / ``drain_lines()`` and writes the lines (or formats the rows with
:func:`format_json_rows` / :func:`format_text_rows` for a sink of another format).

The queue holds rows (:data:`AccessLogRow`, a tuple of 19 items, :func:`wire_row` gives the 24 fields
in :data:`FIELDS` order), not records: the proxy builds one tuple per request, the bus sink packs the
batch's rows as columns (:func:`wire_columns`)
and the line formats read them by index, where a
record object and its later copy as a row cost ~1.4k instructions more per request (making, copying and
freeing them; bench/telemetry_cost.py --callgrind). :class:`AccessLogRecord` remains the named view
(``AccessLogRecord.from_row``), for tests, ``meshctl logs`` and ``log(record)``.

While every sink takes columns (the bus, the common mesh case: ``AccessLogger.use_columns``, which the
writer sets), ``add`` does not even make the row: each item goes to its column
(telemetry/logcolumns.py), a field that repeats the batch's first value costing one compare, and the
bus sink packs those columns as they are (``drain_columns``); ``drain`` still gives rows.

Why a line may be formatted when its request ends rather than by the writer: the writer runs every
0.2 s and formats its batch in slices of ~50 us of loop time (accesslog_writer.DEFAULT_BUDGET_S),
during which a request that arrives waits; formatted one by one, the same work is spread over the
requests and the writer only joins bytes. It costs ~0.6 us more CPU per request (the formatter's code and the
request path's evict each other from the caches), so it is off by default until a quiet A/B of the
tail shows it pays. The bytes written are the same (tests/unit/telemetry/test_accesslog.py).

When access logging is off, the proxy is handed :data:`NULL_ACCESS_LOG` instead, whose ``log`` does
nothing, so the request path has no ``if enabled:`` branch (STYLE.md E10).

JSON keys follow Istio's default JSON access-log encoding (``start_time``, ``method``, ``path``,
``response_code``, ``duration`` in whole ms, ...), so existing log pipelines keep working.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TypeAlias

import orjson

from meshbus.telemetry.errors import ConfigError
from meshbus.telemetry.logcolumns import LogColumns
from meshbus.telemetry.metrics import CounterChild
from meshbus.telemetry.rowcolumns import columns, same_value

DEFAULT_CAPACITY: Final = 8192
LINE_NONE: Final = 0  # AccessLogger.line: records only
LINE_JSON: Final = 1  # ... and each record's format_json_line
LINE_TEXT: Final = 2  # ... and each record's format_text_line_bytes

AccessLogRow: TypeAlias = tuple[Any, ...]
"""What the proxy queues per request (one tuple, not a record object and a later copy of it as a list),
what the writer formats and the bus sink packs: a record's fields in :data:`FIELDS` order, except that
the six a request mostly shares with the requests before it (``upstream_service_time``,
``upstream_cluster``, ``route_name``, ``request_principal``, ``metadata``, ``direction``) are one
:data:`AccessLogTail` at :data:`TAIL`, the last item. 19 items, not 24: CPython keeps freed tuples of
up to 19 items for reuse (a 24-item one is a malloc and a free per request), and the proxy hands
the same tail to every request of a route (proxy/filters/observe.py), so making, packing
(:func:`wire_columns`) and freeing a row handles 19 values, not 24. :func:`wire_row` gives the 24."""

AccessLogTail: TypeAlias = tuple[Any, ...]
"""``(upstream_service_time, upstream_cluster, route_name, request_principal, metadata, direction)``."""

TAIL: Final = 18
"""The index of a row's :data:`AccessLogTail`."""


# Field order is API: the proxy builds records positionally on the hot path. Append new fields at the end.
# Not frozen on purpose: a frozen dataclass __init__ costs ~10x more (object.__setattr__ per field),
# and the proxy may create the record when a request starts and fill response fields when it ends.
# init=False with the __init__ below: compiled, mypyc runs a dataclass-generated __init__ as
# interpreted Python (~1 us for 24 arguments); this one is native (a few dozen ns).
@dataclass(slots=True, init=False)
class AccessLogRecord:
    """One proxied request, as Envoy/Istio access logs describe it. ``None`` renders as null / ``-``."""

    start_time: float
    """Wall-clock start, seconds since the epoch (``time.time()``); formatted as ISO 8601 UTC."""
    method: str | None = None
    path: str | None = None
    protocol: str | None = None
    """``HTTP/1.1``, ``HTTP/2``, ... (Envoy ``%PROTOCOL%``)."""
    response_code: int = 0
    """HTTP status sent downstream; 0 if none was sent."""
    response_flags: str = "-"
    """Envoy ``%RESPONSE_FLAGS%`` short codes (``UH``, ``UF``, ``URX``, ...), ``-`` when none."""
    response_code_details: str | None = None
    """Why the proxy answered as it did, e.g. a filter's local-reply ``details``."""
    bytes_received: int = 0
    """Request body bytes received from downstream."""
    bytes_sent: int = 0
    """Response body bytes sent downstream."""
    duration_ms: float = 0.0
    """Start of request to last byte of response sent, in ms."""
    upstream_service_time: float | None = None
    """Time the upstream took to answer, in ms (Envoy ``x-envoy-upstream-service-time``)."""
    x_forwarded_for: str | None = None
    user_agent: str | None = None
    request_id: str | None = None
    authority: str | None = None
    upstream_host: str | None = None
    upstream_cluster: str | None = None
    route_name: str | None = None
    downstream_remote_address: str | None = None
    downstream_peer_principal: str | None = None
    """SPIFFE ID of the downstream peer once mTLS is in place."""
    trace_id: str | None = None
    """W3C trace id (32 hex) of the request's trace, sampled or not: every hop logs the same one."""
    request_principal: str | None = None
    """``<iss>/<sub>`` of the request's verified JWT (RequestAuthentication), Istio's request principal."""
    metadata: dict[str, str] | None = None
    """Fields the request's filters added (Envoy's dynamic metadata, e.g. the authorization policy that
    decided); rendered as a ``metadata`` object, only when present."""
    direction: str | None = None
    """``inbound`` (the server side: Istio's destination reporter) or ``outbound`` (the client side)."""

    def __init__(
        self,
        start_time: float,
        method: str | None = None,
        path: str | None = None,
        protocol: str | None = None,
        response_code: int = 0,
        response_flags: str = "-",
        response_code_details: str | None = None,
        bytes_received: int = 0,
        bytes_sent: int = 0,
        duration_ms: float = 0.0,
        upstream_service_time: float | None = None,
        x_forwarded_for: str | None = None,
        user_agent: str | None = None,
        request_id: str | None = None,
        authority: str | None = None,
        upstream_host: str | None = None,
        upstream_cluster: str | None = None,
        route_name: str | None = None,
        downstream_remote_address: str | None = None,
        downstream_peer_principal: str | None = None,
        trace_id: str | None = None,
        request_principal: str | None = None,
        metadata: dict[str, str] | None = None,
        direction: str | None = None,
    ) -> None:
        self.start_time = start_time
        self.method = method
        self.path = path
        self.protocol = protocol
        self.response_code = response_code
        self.response_flags = response_flags
        self.response_code_details = response_code_details
        self.bytes_received = bytes_received
        self.bytes_sent = bytes_sent
        self.duration_ms = duration_ms
        self.upstream_service_time = upstream_service_time
        self.x_forwarded_for = x_forwarded_for
        self.user_agent = user_agent
        self.request_id = request_id
        self.authority = authority
        self.upstream_host = upstream_host
        self.upstream_cluster = upstream_cluster
        self.route_name = route_name
        self.downstream_remote_address = downstream_remote_address
        self.downstream_peer_principal = downstream_peer_principal
        self.trace_id = trace_id
        self.request_principal = request_principal
        self.metadata = metadata
        self.direction = direction

    def row(self) -> AccessLogRow:
        """The record as the queue holds it (:data:`AccessLogRow`: the sinks format it, the bus sink
        packs it); :func:`wire_row` gives the fields in declaration order (:data:`FIELDS`)."""
        return (
            self.start_time, self.method, self.path, self.protocol, self.response_code, self.response_flags,
            self.response_code_details, self.bytes_received, self.bytes_sent, self.duration_ms,
            self.x_forwarded_for, self.user_agent, self.request_id, self.authority, self.upstream_host,
            self.downstream_remote_address, self.downstream_peer_principal, self.trace_id,
            (self.upstream_service_time, self.upstream_cluster, self.route_name, self.request_principal,
             self.metadata, self.direction),
        )  # fmt: skip

    @staticmethod
    def from_row(row: AccessLogRow) -> AccessLogRecord:
        """The record a row (:meth:`row`) was made from, for readers that want names, not indexes."""
        return AccessLogRecord(*wire_row(row))


# Where each of FIELDS is in a queued row: (row index, -1), or (TAIL, tail index).
_WIRE: Final[tuple[tuple[int, int], ...]] = (
    *((i, -1) for i in range(10)), (TAIL, 0), *((i, -1) for i in range(10, 15)), (TAIL, 1), (TAIL, 2),
    *((i, -1) for i in range(15, 18)), (TAIL, 3), (TAIL, 4), (TAIL, 5),
)  # fmt: skip


def wire_row(r: AccessLogRow) -> tuple[Any, ...]:
    """A queued row's 24 fields in :data:`FIELDS` order (what AccessLogBatch carries per request)."""
    t = r[TAIL]
    return tuple(r[i] if j < 0 else t[j] for i, j in _WIRE)


def wire_columns(rows: list[AccessLogRow]) -> list[list[Any]]:
    """:func:`meshbus.telemetry.rowcolumns.columns` of the rows in :data:`FIELDS` order (of each row's
    :func:`wire_row`), without making those: the rows' columns, the tails' split into their six."""
    if not rows:
        return []
    # the tails apart, in one pass by identity alone: the proxy hands one tuple to a route's requests,
    # and only the same tuple is equal field by field (equal tuples may hold 1 and 1.0, which the
    # columns keep apart); tails that are not all one object are split into columns field by field
    cols = columns(rows, TAIL)
    t: AccessLogTail = rows[0][TAIL]
    split: list[list[Any]] | None = None
    for r in rows:
        if r[TAIL] is not t:
            split = columns([r[TAIL] for r in rows])
            break
    if split is None:
        split = [[v] for v in t]
    out: list[list[Any]] = []
    for i, j in _WIRE:
        out.append(cols[i] if j < 0 else split[j])
    return out


def wire_columns_of(acc: LogColumns) -> list[Any]:
    """:func:`wire_columns` of the records ``acc`` holds (a column may list every value where
    :func:`wire_columns` has one: the values a record repeated from the one before it, read back the same),
    for :func:`meshbus.telemetry.rowcolumns.float_columns`: start times and durations may be their
    doubles already (`LogColumns.ship_columns`)."""
    if not acc.n:
        return []
    cols = acc.ship_columns()
    split = acc.tail_columns()
    out: list[Any] = []
    for i, j in _WIRE:
        out.append(cols[i] if j < 0 else split[j])
    return out


FIELDS: Final[tuple[str, ...]] = (
    "start_time", "method", "path", "protocol", "response_code", "response_flags", "response_code_details",
    "bytes_received", "bytes_sent", "duration_ms", "upstream_service_time", "x_forwarded_for", "user_agent",
    "request_id", "authority", "upstream_host", "upstream_cluster", "route_name", "downstream_remote_address",
    "downstream_peer_principal", "trace_id", "request_principal", "metadata", "direction",
)  # fmt: skip
"""AccessLogRecord's fields in order (what :func:`wire_row` gives, and AccessLogBatch carries); tests
hold the two in step."""


class AccessLog(Protocol):
    """What the proxy holds: :class:`AccessLogger` or :data:`NULL_ACCESS_LOG`."""

    def log(self, record: AccessLogRecord) -> None: ...

    def log_row(self, row: AccessLogRow) -> None: ...

    def drain(self) -> list[AccessLogRow]: ...

    def drain_lines(self) -> list[bytes]: ...

    def drain_columns(self) -> LogColumns: ...


class AccessLogger:
    """Bounded queue of records, as rows (:data:`AccessLogRow`), between the request path (``log_row``,
    or ``log`` for a record) and one writer (``drain``).

    With ``line`` set (a ``per_request`` writer sets it to its first file sink's format, :data:`LINE_JSON`
    or :data:`LINE_TEXT`), ``log`` also formats the record into its line, kept in step with the records
    (``drain_lines``): the i-th line is the i-th record's. A record whose line fails to format is dropped (and counted), not the batch.
    Single-threaded: both sides run on the proxy's event loop, so no lock is needed.
    """

    __slots__ = ("_buf", "_dropped", "_lines", "capacity", "cols", "line")

    def __init__(self, capacity: int = DEFAULT_CAPACITY, dropped: CounterChild | None = None) -> None:
        if capacity < 1:
            raise ConfigError(f"access log capacity must be >= 1 (got {capacity})")
        self.capacity = capacity
        self._buf: list[AccessLogRow] = []
        self._lines: list[bytes] = []
        self._dropped = dropped if dropped is not None else CounterChild()
        # a format number, not a callable: compiled, a direct call to the formatter is ~0.3 us cheaper
        self.line = LINE_NONE
        self.cols: LogColumns | None = None
        """Where records go instead of the queue of rows while the only sinks take columns (the bus:
        `use_columns`)."""

    def log(self, record: AccessLogRecord) -> None:
        self.log_row(record.row())

    def add(
        self, start: float, method: Any, path: Any, protocol: Any, status: Any, flags: Any, details: Any,
        bin_: Any, bout: Any, duration: float, xff: Any, agent: Any, rid: Any, authority: Any, uhost: Any,
        remote: Any, principal: Any, trace: Any, tail: AccessLogTail,
    ) -> None:  # fmt: skip
        """``log_row`` of the row of these 19 items, without making the row while records are kept
        as columns; the start time and duration are floats (the proxy's: `LogColumns.add`), a row
        with other values goes by ``log_row``."""
        cols = self.cols
        if cols is None:
            self.log_row((
                start, method, path, protocol, status, flags, details, bin_, bout, duration, xff, agent, rid,
                authority, uhost, remote, principal, trace, tail,
            ))  # fmt: skip
        elif cols.n >= self.capacity:
            self._dropped.value += 1
        else:
            cols.add(
                start, method, path, protocol, status, flags, details, bin_, bout, duration, xff, agent, rid,
                authority, uhost, remote, principal, trace, tail,
            )  # fmt: skip

    def use_columns(self, on: bool) -> None:
        """Keep records as columns (`drain_columns`) or as rows (`drain`); those queued are kept."""
        if on and self.cols is None:
            rows = self.drain()
            cols = self.cols = LogColumns()
            for row in rows:
                cols.add_row(row)
        elif not on and self.cols is not None:
            rows = self.drain()  # the columns' records (the queue of rows is empty while they are kept)
            self.cols = None
            self._buf = rows

    def log_row(self, row: AccessLogRow) -> None:
        cols = self.cols
        if cols is not None:
            if cols.n >= self.capacity:
                self._dropped.value += 1
            else:
                cols.add_row(row)
            return
        buf = self._buf
        if len(buf) >= self.capacity:
            self._dropped.value += 1
            return
        line = self.line
        if line:
            try:
                self._lines.append(format_json_row(row) if line == LINE_JSON else format_text_row_bytes(row))
            except Exception:  # a value the format cannot carry: lose this record, never the request
                self._dropped.value += 1
                return
        buf.append(row)

    def drain(self) -> list[AccessLogRow]:
        """Take every queued row (O(1): the buffer is swapped, not copied)."""
        buf, self._buf = self._buf, []
        if self.cols is not None:
            return self.drain_columns().rows()
        return buf

    def drain_columns(self) -> LogColumns:
        """Take every queued record, as columns (O(1) while records are kept as columns)."""
        cols = self.cols
        if cols is not None:
            self.cols = LogColumns()
            return cols
        cols = LogColumns()
        for row in self.drain():
            cols.add_row(row)
        return cols

    def drain_lines(self) -> list[bytes]:
        """Take every queued line (``line`` set): one per record ``drain`` gives, call both together."""
        lines, self._lines = self._lines, []
        return lines

    @property
    def pending(self) -> int:
        return len(self._buf) if self.cols is None else self.cols.n

    @property
    def dropped(self) -> int:
        return int(self._dropped.value)


class NullAccessLogger:
    """Access logging turned off: ``log`` does nothing."""

    __slots__ = ()

    def log(self, record: AccessLogRecord) -> None:
        pass

    def log_row(self, row: AccessLogRow) -> None:
        pass

    def drain(self) -> list[AccessLogRow]:
        return []

    def drain_lines(self) -> list[bytes]:
        return []

    def drain_columns(self) -> LogColumns:
        return LogColumns()


NULL_ACCESS_LOG: Final = NullAccessLogger()


# --- formatting (off the request path) -----------------------------------------------------------------
# (second, "YYYY-MM-DDTHH:MM:SS") of the last formatted time: a batch mostly shares the same few seconds,
# and formatting a datetime costs ~1 us where this costs ~0.2 us.
_second_cache: tuple[int, str] = (-1, "")
_MS_SUFFIX: Final = tuple(f".{ms:03d}Z" for ms in range(1000))
_MS_QUOTED: Final = tuple(f'{m}"' for m in _MS_SUFFIX)


def format_start_time(epoch_s: float) -> str:
    """ISO 8601 UTC with milliseconds, as Envoy's ``%START_TIME%``: ``2026-11-27T18:57:16.123Z``."""
    global _second_cache
    sec, ms = _second_ms(epoch_s)
    cached = _second_cache
    if cached[0] != sec:
        cached = _second_cache = (sec, _iso_second(sec))
    return cached[1] + _MS_SUFFIX[ms]


def _second_ms(epoch_s: float) -> tuple[int, int]:
    """The whole second and the millisecond (0-999) ``epoch_s`` is logged at: rounded to microseconds
    first, as datetime does (compiled, the tuple is returned unboxed)."""
    sec = math.floor(epoch_s)
    us = _round((epoch_s - sec) * 1e6)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return sec, us // 1000


def _iso_second(sec: int) -> str:
    return datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _round(v: float) -> int:
    """``round(v)`` (half to even): compiled, the builtin is a generic call, ~1k instructions."""
    if v >= 0.0:  # v - floor(v) is exact here; nan goes to round(), which raises as floor would for inf
        f = math.floor(v)
        d = v - f
        return f + 1 if d > 0.5 or (d == 0.5 and f % 2 == 1) else f
    return round(v)


def _ms(value: float | None) -> int | None:
    return None if value is None else _round(value)


def to_json_dict(r: AccessLogRecord) -> dict[str, Any]:
    """The record under Istio's JSON access-log keys (durations in whole ms, as Envoy logs them)."""
    doc: dict[str, Any] = {
        "start_time": format_start_time(r.start_time),
        "method": r.method,
        "path": r.path,
        "protocol": r.protocol,
        "response_code": r.response_code,
        "response_flags": r.response_flags,
        "response_code_details": r.response_code_details,
        "bytes_received": r.bytes_received,
        "bytes_sent": r.bytes_sent,
        "duration": _ms(r.duration_ms),
        "upstream_service_time": _ms(r.upstream_service_time),
        "x_forwarded_for": r.x_forwarded_for,
        "user_agent": r.user_agent,
        "request_id": r.request_id,
        "authority": r.authority,
        "upstream_host": r.upstream_host,
        "upstream_cluster": r.upstream_cluster,
        "route_name": r.route_name,
        "downstream_remote_address": r.downstream_remote_address,
        "downstream_peer_principal": r.downstream_peer_principal,
        "trace_id": r.trace_id,
        "request_principal": r.request_principal,
        "direction": r.direction,
    }
    if r.metadata:
        doc["metadata"] = r.metadata
    return doc


# Fields whose values repeat from request to request (a route's cluster, the client's agent...): their
# '"key":value' pieces are kept, so most of a line is joined, not encoded. Each cache is cleared when it
# reaches _FRAG_MAX values (a field with unique values then costs what it cost without one).
_FRAG_MAX: Final = 256
_FRAG_KEYS: Final = (
    ',"method":', ',"protocol":', ',"response_flags":', ',"response_code_details":', ',"x_forwarded_for":',
    ',"user_agent":', ',"authority":', ',"upstream_host":', ',"upstream_cluster":', ',"route_name":',
    ',"downstream_remote_address":', ',"downstream_peer_principal":', ',"request_principal":', ',"direction":',
)  # fmt: skip
_frags: Final[list[dict[str | None, str]]] = [{} for _ in _FRAG_KEYS]


def _frag(i: int, value: str | None) -> str:
    cache = _frags[i]
    f = cache.get(value)
    if f is None:
        f = _FRAG_KEYS[i] + _js(value)
        if len(cache) >= _FRAG_MAX:
            cache.clear()
        cache[value] = f
    return f


# bound once: compiled, ``orjson.dumps(x)`` is a method call by name on the module (~300 instructions)
_dumps: Final = orjson.dumps


def _js(value: object) -> str:
    """``orjson.dumps(value)`` as a str (a str build is a plain copy, a bytes join goes through the buffer
    protocol piece by piece). A printable string without ``"`` or ``\\`` needs no escape (orjson writes
    UTF-8 as it is): quoted as it is (request ids, trace ids, most paths) at half the cost."""
    if value is None:
        return "null"
    if isinstance(value, str) and '"' not in value and "\\" not in value and value.isprintable():
        return f'"{value}"'
    return _dumps(value).decode()


def _int(value: int | None) -> str:
    return "null" if value is None else str(value)


def _same(x: object, v: object) -> bool:
    """Whether ``x`` renders in a line as ``v`` did: the same object, or an equal str, int or float of
    one type (``1``, ``1.0`` and ``True`` differ; equal dicts are not, their orders may differ)."""
    if x is v:
        return True
    t = type(x)
    if t is not type(v):
        return False
    if t is str or t is int:
        return x == v
    return t is float and same_value(x, v)


_UNSET: Final = object()
_DECIMAL: Final = tuple(str(i) for i in range(1000))  # durations: str() of an int is ~380 instructions


class _LastLine:
    """The pieces of the last line made and the values each was made of (the writer formats on the
    event loop's thread; a piece and its values are set together, after the piece was made).

    A sidecar's lines repeat all but four fields (start time, duration, request and trace ids) from
    one request to the next: a piece whose values are the last line's is reused after one compare a
    value, so a line costs those four fields and one join, not 23 fields (callgrind, compiled, in the
    writer's chunks of 8: ~15.5k instructions a line before)."""

    # the values of each piece (p1 to p5), and the tail that those of p3 to p5 were last made of or
    # checked against; p3q to p5q: p3 to p5 with the quotes of the ids between them (_plain_ids)
    method: object
    path: object
    protocol: object
    status: object
    flags: object
    details: object
    bin: object
    bout: object
    tail: object
    ust: object
    xff: object
    agent: object
    authority: object
    uhost: object
    cluster: object
    route: object
    remote: object
    peer: object
    rp: object
    md: object
    direction: object

    def __init__(self) -> None:
        self.method = self.path = self.protocol = self.status = self.flags = self.details = _UNSET
        self.bin = self.bout = self.tail = self.ust = self.xff = self.agent = self.authority = _UNSET
        self.uhost = self.cluster = self.route = self.remote = self.peer = self.rp = self.md = _UNSET
        self.direction = _UNSET
        self.p1 = self.p2 = self.p3 = self.p4 = self.p5 = self.p3q = self.p4q = self.p5q = ""
        self.sec = -1
        self.head = ""
        """The line's start up to the start time's second ``sec`` (format_start_time's cache)."""


_last: Final = _LastLine()


def _line(r: AccessLogRow, out: list[str], plain: bool) -> None:
    """:func:`format_json_row`'s line, added to ``out``."""
    s = _last
    method, path = r[1], r[2]
    if not (_same(method, s.method) and _same(path, s.path)):
        p = _frag(0, method) + ',"path":' + _js(path)
        s.method, s.path, s.p1 = method, path, p
    protocol, status, flags, details, bin_, bout = r[3], r[4], r[5], r[6], r[7], r[8]
    if not (
        _same(protocol, s.protocol) and _same(status, s.status) and _same(flags, s.flags)
        and _same(details, s.details) and _same(bin_, s.bin) and _same(bout, s.bout)
    ):  # fmt: skip
        p = (
            f'{_frag(1, protocol)},"response_code":{status}{_frag(2, flags)}{_frag(3, details)}'
            f',"bytes_received":{bin_},"bytes_sent":{bout},"duration":'
        )
        s.protocol, s.status, s.flags, s.details, s.bin, s.bout, s.p2 = (
            protocol, status, flags, details, bin_, bout, p
        )  # fmt: skip
    t: AccessLogTail = r[TAIL]
    same_tail = t is s.tail
    xff, agent = r[10], r[11]
    if not same_tail:
        s.tail = _UNSET  # until every piece holds this tail's values (a piece may fail to be made)
    if not (_same(xff, s.xff) and _same(agent, s.agent) and (same_tail or _same(t[0], s.ust))):
        ust = t[0]
        p = f',"upstream_service_time":{_int(_ms(ust))}{_frag(4, xff)}{_frag(5, agent)},"request_id":'
        s.ust, s.xff, s.agent, s.p3, s.p3q = ust, xff, agent, p, p + '"'
    authority, uhost, remote, peer = r[13], r[14], r[15], r[16]
    if not (
        _same(authority, s.authority) and _same(uhost, s.uhost) and _same(remote, s.remote)
        and _same(peer, s.peer) and (same_tail or (_same(t[1], s.cluster) and _same(t[2], s.route)))
    ):  # fmt: skip
        cluster, route = t[1], t[2]
        p = (
            f"{_frag(6, authority)}{_frag(7, uhost)}{_frag(8, cluster)}{_frag(9, route)}"
            f'{_frag(10, remote)}{_frag(11, peer)},"trace_id":'
        )
        s.authority, s.uhost, s.cluster, s.route, s.remote, s.peer, s.p4, s.p4q = (
            authority, uhost, cluster, route, remote, peer, p, '"' + p + '"'
        )  # fmt: skip
    if not same_tail:
        rp, md, direction = t[3], t[4], t[5]
        if not (_same(rp, s.rp) and md is s.md and _same(direction, s.direction)):
            end = ',"metadata":' + _js(md) + "}\n" if md else "}\n"
            p = f"{_frag(12, rp)}{_frag(13, direction)}{end}"
            s.rp, s.md, s.direction, s.p5, s.p5q = rp, md, direction, p, '"' + p
        # every piece now holds this tail's values: the next row with this tail skips their compares
        s.tail = t
    d = _ms(r[9])
    dur = "null" if d is None else _DECIMAL[d] if 0 <= d < 1000 else str(d)
    # format_start_time's, in two pieces (the second's, cached here with the line's start, and the
    # milliseconds')
    sec, ms = _second_ms(r[0])
    if sec != s.sec:
        s.sec, s.head = sec, '{"start_time":"' + _iso_second(sec)
    # one str a line, built in one pass (compiled: an f-string is one allocation and a copy a piece),
    # then the chunk's lines joined: ten pieces a line appended to the chunk's list and joined cost
    # ~100 instructions a line more (callgrind, bench/chain_callgrind.py)
    if plain:  # the ids need no escape (_plain_ids): quoted as they are, the quotes in the pieces
        rid: str = r[12]
        trace: str = r[17]
        out.append(f"{s.head}{_MS_QUOTED[ms]}{s.p1}{s.p2}{dur}{s.p3q}{rid}{s.p4q}{trace}{s.p5q}")
    else:
        out.append(f"{s.head}{_MS_QUOTED[ms]}{s.p1}{s.p2}{dur}{s.p3}{_js(r[12])}{s.p4}{_js(r[17])}{s.p5}")


def _plain_ids(rows: list[AccessLogRow]) -> bool:
    """Whether every row's request and trace ids are strings that JSON quotes as they are (ids are
    ASCII letters, digits and ``-``): orjson, given them all at once, escapes none of them. One C
    call a batch, where a check of each id for characters to escape cost ~900 instructions."""
    ids: list[str] = []
    for r in rows:
        rid, trace = r[12], r[17]
        if type(rid) is not str or type(trace) is not str:
            return False
        ids.append(rid)
        ids.append(trace)
    joined = "".join(ids)
    # a str orjson writes as its quoted self, byte for byte, holds only ASCII (more bytes a character
    # otherwise) that needs no escape: the length alone says it, no isascii() call by name
    return len(_dumps(joined)) == len(joined) + 2


def format_json_row(r: AccessLogRow) -> bytes:
    """One row's JSON line, with its ``\\n``: byte for byte ``orjson.dumps(to_json_dict(record)) + b"\\n"``
    (the tests hold the two equal), the pieces that repeat the last line's values reused
    (:class:`_LastLine`), the others built from cached ``"key":value`` pieces (a field's values mostly
    repeat). Indexes are :data:`FIELDS`'."""
    out: list[str] = []
    _line(r, out, False)
    return "".join(out).encode()


def format_json_rows(rows: Iterable[AccessLogRow]) -> bytes:
    """One :func:`to_json_dict` object per row, each followed by ``\\n``: the rows' pieces joined and
    encoded at once. Callgrind, compiled, bench/chain.py's rows in the writer's chunks of 8: ~5k
    instructions a line, against ~15.5k when each line was built alone from 23 fields and encoded."""
    batch = rows if isinstance(rows, list) else list(rows)
    plain = _plain_ids(batch)
    out: list[str] = []
    for r in batch:
        _line(r, out, plain)
    return "".join(out).encode()


def format_json_line(r: AccessLogRecord) -> bytes:
    """:func:`format_json_row` of the record's row."""
    return format_json_row(r.row())


def format_json_lines(records: Iterable[AccessLogRecord]) -> bytes:
    """One :func:`to_json_dict` object per record, each followed by ``\\n``."""
    return format_json_rows([r.row() for r in records])


def _t(value: object) -> str:
    return "-" if value is None else str(value)


def format_text_row(r: AccessLogRow) -> str:
    """Envoy's default text format (``-`` for a missing value), without the trailing newline."""
    return (
        f'[{format_start_time(r[0])}] "{_t(r[1])} {_t(r[2])} {_t(r[3])}" '
        f"{r[4]} {r[5]} {r[7]} {r[8]} "
        f"{_ms(r[9])} {_t(_ms(r[TAIL][0]))} "
        f'"{_t(r[10])}" "{_t(r[11])}" "{_t(r[12])}" '
        f'"{_t(r[13])}" "{_t(r[14])}"'
    )


def format_text_rows(rows: Iterable[AccessLogRow]) -> bytes:
    return "".join(format_text_row(r) + "\n" for r in rows).encode()


def format_text_row_bytes(r: AccessLogRow) -> bytes:
    """One row's text line with its ``\\n``, encoded (UTF-8, as :func:`format_text_rows`)."""
    return (format_text_row(r) + "\n").encode()


def format_text_line(r: AccessLogRecord) -> str:
    """:func:`format_text_row` of the record's row."""
    return format_text_row(r.row())


def format_text_lines(records: Iterable[AccessLogRecord]) -> bytes:
    return format_text_rows([r.row() for r in records])
