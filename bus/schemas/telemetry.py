"""Telemetry on the bus: what proxies ship to meshbus-telemetry, and what its replicas answer.

Proxies publish batches, never a message per request (Mixer's lesson, issue 13): every second a
proxy sends the *deltas* of its metric series since its last batch, the spans it ended meanwhile,
and its access-log records, as rows packed once. Deltas add up, so the collectors can split the batches
(a queue group) and Prometheus sums the replicas (see meshbus.telemetry.collector).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack
import orjson

from ..codec import message
from ..errors import BadRequestError


@dataclass(frozen=True, slots=True)
class Source:
    """The proxy a batch comes from."""

    node: str
    """Proxy id (``reviews-v1-3f9a2c``)."""
    service: str = ""
    namespace: str = ""
    workload: str = ""


@dataclass(frozen=True, slots=True)
class FamilyDelta:
    """The changes of one metric family (or variant: another label set of the same name)."""

    name: str
    kind: str
    """``counter`` or ``histogram`` (gauges are not shipped: they do not add up)."""
    help: str
    labels: list[str]
    buckets: list[float] = field(default_factory=list)
    """Histogram upper bounds (+Inf implied)."""
    samples: list[list[Any]] = field(default_factory=list)
    """Counter: ``[label values, delta]``; histogram: ``[label values, per-bucket deltas (+Inf last), sum delta]``."""


@message("meshbus.telemetry.v1.MetricBatch")
@dataclass(frozen=True, slots=True)
class MetricBatch:
    """One proxy's metric deltas since its previous batch (an empty one is a heartbeat)."""

    source: Source
    seq: int = 0
    """Per proxy, +1 per batch: a collector counts the gaps it sees."""
    families: list[FamilyDelta] = field(default_factory=list)


@message("meshbus.telemetry.v1.SpanBatch")
@dataclass(frozen=True, slots=True)
class SpanBatch:
    source: Source
    resource: dict[str, str] = field(default_factory=dict)
    """The OpenTelemetry resource of the proxy's spans (service.name, ...)."""
    provider: str = ""
    """The MeshConfig opentelemetry provider the Telemetry policy names ("": the collector's default)."""
    fields: list[str] = field(default_factory=list)
    """The names of the row fields, in order (proxy/filters/spans.py ROW): trace_id, span_id,
    parent_span_id (hex; "" for a root), name, kind (1 server, 2 client), start_ns, end_ns,
    attributes, status_code (0 unset, 2 error), tracestate. Readers find fields by name."""
    spans: bytes = b""
    """The rows, one per span, in ``encoding``: packed in one call, never walked value by value (a span
    costs well under 1 us to ship this way, ~30 us as a message of its own)."""
    count: int = 0
    encoding: str = "msgpack"
    """How ``spans`` is packed: `ROWS_JSON_COLUMNS_3` (what proxies send: a batch's spans repeat most
    of their fields, written once as columns), `ROWS_JSON` (rows, before it; still what rows JSON cannot
    carry go as, by `encode_rows`) or `ROWS_MSGPACK` (the default: what proxies sent before this field
    existed). A reader that predates an encoding refuses the batch: "unknown row encoding"."""
    doubles: bytes = b""
    """`ROWS_JSON_COLUMNS_3`'s float columns, as `AccessLogBatch.doubles`."""


@message("meshbus.telemetry.v1.AccessLogBatch")
@dataclass(frozen=True, slots=True)
class AccessLogBatch:
    """Access-log records as rows: ``fields`` names them (meshbus.telemetry.accesslog.AccessLogRecord's
    fields), ``records`` holds one row of values per request (``start_time`` in epoch seconds,
    ``duration_ms`` in ms) as one array (`encode_rows`). ``meshctl logs`` renders them under
    Istio's JSON keys."""

    source: Source
    fields: list[str] = field(default_factory=list)
    records: bytes = b""
    count: int = 0
    encoding: str = "msgpack"
    """How ``records`` is packed, as `SpanBatch.encoding`; proxies pack access logs as
    `ROWS_JSON_COLUMNS_3` (`ROWS_JSON_COLUMNS_2`, and `ROWS_JSON_COLUMNS` before it; a reader that predates
    an encoding refuses the batch: "unknown row encoding")."""
    doubles: bytes = b""
    """`ROWS_JSON_COLUMNS_3`'s float columns, as little-endian IEEE 754 doubles (empty otherwise)."""


@message("meshbus.telemetry.v1.StatsRequest")
@dataclass(frozen=True, slots=True)
class StatsRequest:
    """Asked of every meshbus-telemetry replica at once (no queue group): their traffic of the
    last ``window_s`` seconds, by edge, for ``meshctl top`` and the graph."""

    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class EdgeStats:
    """Traffic between two workloads, as one reporter saw it, over the window."""

    reporter: str
    source_workload: str
    source_namespace: str
    source_app: str
    source_version: str
    source_principal: str
    destination_workload: str
    destination_namespace: str
    destination_app: str
    destination_version: str
    destination_service: str
    requests: int = 0
    errors: int = 0
    """Responses with a 5xx code (or none at all: code 0)."""
    mtls: int = 0
    """Requests over mutual TLS (destination reports only)."""
    duration_buckets: list[int] = field(default_factory=list)
    """Per-bucket counts of istio_request_duration_milliseconds (+Inf last)."""


ROWS_JSON: Final = "json"
ROWS_MSGPACK: Final = "msgpack"
ROWS_JSON_COLUMNS: Final = "json-columns"
"""The rows as columns, by orjson: ``[count, column, column, ...]``, one column per field; a column is
either ``count`` values or, when every row has the same value, that value once (``[value]``). What
proxies sent access logs as (meshbus.telemetry.rowcolumns says why) before `ROWS_JSON_COLUMNS_2`;
`unpack_rows` gives rows back."""


ROWS_JSON_COLUMNS_2: Final = "json-columns-2"
"""`ROWS_JSON_COLUMNS` with the float columns apart: a msgpack array ``[json, doubles]``. ``json`` is
``[count, column, ...]`` as `ROWS_JSON_COLUMNS`, except that a column of ``count`` finite floats (start
times, durations) is an integer ``k`` there instead of a list: its values are the ``k``-th run of ``count``
little-endian IEEE 754 doubles in ``doubles`` (which holds those runs and nothing else). The floats read
back are bit for bit the ones sent (orjson's shortest digits round-trip exactly too, but cost ~5x an id
string to write: meshbus.telemetry.rowcolumns.float_columns). What proxies sent access logs as before
`ROWS_JSON_COLUMNS_3`."""


ROWS_JSON_COLUMNS_3: Final = "json-columns-3"
"""`ROWS_JSON_COLUMNS_2` without its envelope: ``records`` (``spans``) is the ``json`` part itself and the
doubles are the batch's own field (`AccessLogBatch.doubles`, `SpanBatch.doubles`). The envelope copied
the whole batch twice more (into msgpack's buffer, then out of it) before the message packed it again: ~200 instructions a request of a
sidecar's ~3,000 for its access log (bench/telemetry_cost.py --callgrind). What proxies send access
logs and spans as (`encode_columns` writes ``records``); `unpack_rows` reads it given the doubles."""


def _unpack_columns(data: bytes) -> list[list[Any]]:
    return _rows_of_columns(orjson.loads(data), [])


def _unpack_columns_2(data: bytes) -> list[list[Any]]:
    env = msgpack.unpackb(data, raw=False)
    if not isinstance(env, list) or len(env) != 2 or not all(isinstance(p, bytes) for p in env):
        raise BadRequestError("json-columns-2 must be [json, doubles] (two byte strings)")
    return _unpack_columns_3(env[0], env[1])


def _unpack_columns_3(data: bytes, doubles: bytes) -> list[list[Any]]:
    if len(doubles) % 8:
        raise BadRequestError(f"doubles must be 8 bytes each, not {len(doubles)} bytes")
    return _rows_of_columns(orjson.loads(data), list(struct.unpack(f"<{len(doubles) // 8}d", doubles)))


def _rows_of_columns(doc: Any, floats: list[float]) -> list[list[Any]]:
    """The rows of a ``[count, column, ...]`` document, its packed columns (ints) read from ``floats``."""
    if not isinstance(doc, list) or not doc or type(doc[0]) is not int or doc[0] < 0:
        raise BadRequestError("columns must be [count, column, ...]")
    n: int = doc[0]
    cols = doc[1:]
    packed = 0
    for i, c in enumerate(cols):
        if type(c) is int:
            if not 0 <= c < len(floats) // max(n, 1) or n < 2:
                raise BadRequestError(f"column {i}: no run {c} of {n} doubles (of {len(floats)})")
            cols[i] = floats[c * n : (c + 1) * n]
            packed += 1
    if packed * n != len(floats):
        raise BadRequestError(f"{len(floats)} doubles for {packed} packed columns of {n}")
    if not all(isinstance(c, list) and (len(c) == n or len(c) == 1) for c in cols):
        raise BadRequestError(f"each column must hold {n} values or 1")
    if not cols:
        return [[] for _ in range(n)]
    return [list(r) for r in zip(*(c if len(c) == n else c * n for c in cols), strict=True)]


_UNPACK: Final[dict[str, Callable[[bytes], Any]]] = {
    ROWS_JSON: orjson.loads,
    ROWS_MSGPACK: lambda data: msgpack.unpackb(data, raw=False, strict_map_key=False),
    ROWS_JSON_COLUMNS: _unpack_columns,
    ROWS_JSON_COLUMNS_2: _unpack_columns_2,
}


def encode_rows(rows: list[Any]) -> tuple[bytes, str]:
    """Rows of plain values (str, numbers, None, lists, str-keyed maps) as one array, and its encoding.

    JSON by orjson: rows are mostly short strings, which orjson packs ~4x faster than msgpack does
    (a 24-field access-log row: ~0.15 us against ~0.6 us), and proxies pack one row per request and
    hop. A batch orjson refuses (a map with a non-str key) goes as msgpack, which takes it. Floats
    keep their value either way (orjson writes NaN as null: no row holds one)."""
    try:
        return orjson.dumps(rows), ROWS_JSON
    except orjson.JSONEncodeError:
        return pack_rows(rows), ROWS_MSGPACK


def encode_columns(columns: list[Any], count: int) -> bytes:
    """``count`` rows as `ROWS_JSON_COLUMNS`, from their columns (meshbus.telemetry.rowcolumns.columns),
    or as `ROWS_JSON_COLUMNS_3` from meshbus.telemetry.rowcolumns.float_columns' columns (its doubles
    then go in `AccessLogBatch.doubles` as they are); orjson's JSONEncodeError when a value is not JSON
    (the caller then packs the rows by `encode_rows`)."""
    return orjson.dumps([count, *columns])


def encode_columns_2(columns: list[Any], doubles: bytes, count: int) -> bytes:
    """``count`` rows as `ROWS_JSON_COLUMNS_2` (what proxies sent before `ROWS_JSON_COLUMNS_3`), from
    meshbus.telemetry.rowcolumns.float_columns' columns and doubles; orjson's JSONEncodeError as
    `encode_columns`."""
    return msgpack.packb([orjson.dumps([count, *columns]), doubles], use_bin_type=True)


def pack_rows(rows: list[Any]) -> bytes:
    """Rows as one msgpack array (`ROWS_MSGPACK`): `encode_rows`'s fallback, and all that proxies
    sent before batches named their encoding."""
    return msgpack.packb(rows, use_bin_type=True)


def unpack_rows(data: bytes, encoding: str = ROWS_MSGPACK, doubles: bytes = b"") -> list[list[Any]]:
    """`encode_rows` (or `pack_rows`, `encode_columns`, ...; `ROWS_JSON_COLUMNS_3` with its ``doubles``) undone; a payload that is
    not a list of rows in ``encoding``, doubles with an encoding that has none, or an encoding this reader
    does not know, gives BadRequestError."""
    unpack = _UNPACK.get(encoding)
    if encoding == ROWS_JSON_COLUMNS_3:
        unpack = functools.partial(_unpack_columns_3, doubles=doubles)
    elif unpack is None:
        known = ", ".join([*_UNPACK, ROWS_JSON_COLUMNS_3])
        raise BadRequestError(
            f"unknown row encoding {encoding!r} (known: {known}): a batch from a newer proxy?"
        )
    elif doubles:
        raise BadRequestError(
            f"{len(doubles)} bytes of doubles with row encoding {encoding!r}, which has none"
        )
    try:
        rows = unpack(data) if data or doubles else []
    except BadRequestError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise BadRequestError(f"undecodable rows: {exc.__class__.__name__}") from None
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise BadRequestError("rows must be a list of lists")
    return rows


def edge_stats(key: tuple[str, ...], requests: int, errors: int, mtls: int, buckets: list[int]) -> EdgeStats:
    """An EdgeStats from its eleven key fields (reporter ... destination_service) and its counts."""
    (reporter, sw, sns, sapp, sver, sp, dw, dns, dapp, dver, dsvc) = key
    return EdgeStats(
        reporter, sw, sns, sapp, sver, sp, dw, dns, dapp, dver, dsvc, requests, errors, mtls, buckets
    )


@message("meshbus.telemetry.v1.StatsReply")
@dataclass(frozen=True, slots=True)
class StatsReply:
    replica: str
    window_s: float
    buckets: list[float] = field(default_factory=list)
    """Upper bounds of ``duration_buckets`` (ms)."""
    edges: list[EdgeStats] = field(default_factory=list)
    proxies: int = 0
    """Proxies this replica heard from within the grace period."""
