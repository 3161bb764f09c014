"""Telemetry rows on the bus: what proxies pack (JSON by orjson, access logs as JSON columns, msgpack when
orjson refuses a batch), what readers unpack (all, and the msgpack batches of proxies from before
batches named their encoding), and what they say of an encoding they do not know."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from typing import Any

import msgpack
import orjson
import pytest

from meshbus.bus import codec
from meshbus.bus.errors import BadRequestError
from meshbus.bus.schemas.telemetry import (
    ROWS_JSON,
    ROWS_JSON_COLUMNS,
    ROWS_JSON_COLUMNS_2,
    ROWS_JSON_COLUMNS_3,
    ROWS_MSGPACK,
    AccessLogBatch,
    Source,
    SpanBatch,
    encode_columns,
    encode_columns_2,
    encode_rows,
    pack_rows,
    unpack_rows,
)
from meshbus.control.cli.telemetry_cmds import records_of
from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.proxy.mesh.telemetry_ship import _RECORD_FIELDS, access_log_batch
from meshbus.telemetry.accesslog import TAIL, AccessLogRecord, wire_columns, wire_row
from meshbus.telemetry.metrics import CounterChild
from meshbus.telemetry.rowcolumns import columns, float_columns

pytestmark = pytest.mark.unit

RECORD = AccessLogRecord(1_700_000_000.123456, "GET", "/r?q=ü", "HTTP/1.1", 503, "UH", "no_healthy_upstream",
                         7, 19, 12.625, None, "10.0.0.9", "wrk", "rid-1", "reviews:9080", "10.0.0.7:9080",
                         "outbound|9080||reviews", "default", "10.0.0.3", "spiffe://cluster.local/ns/default/sa/p",
                         "4bf92f3577b34da6a3ce929d0e0e4736", "iss/sub", {"authz_policy": "ns/deny"}, "outbound")  # fmt: skip


def _span_rows() -> list[tuple[object, ...]]:
    spans = SpanRecorder()
    facts = [
        "GET",
        "/y",
        "y:9080",
        "1.1",
        "rid",
        None,
        "10.0.0.1",
        None,
        "r",
        9080,
        200,
        "-",
        None,
        None,
        "node",
    ]
    for tags in (None, {"team": "a", "n": 3, "ok": True}):
        span = spans.start("GET y", True, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "", "k=v",
                           1_700_000_000_123_456_789, tags)  # fmt: skip
        spans.end(span, False, 1_700_000_000_223_456_789, facts)
    return spans.drain()


def test_access_log_and_span_rows_round_trip_as_json() -> None:
    for rows in ([wire_row(RECORD.row()), wire_row(RECORD.row())], _span_rows()):
        data, encoding = encode_rows(rows)
        assert encoding == ROWS_JSON
        # floats, 64-bit ns times, maps, None: exactly (an access-log row, a tuple, comes back a list)
        assert unpack_rows(data, encoding) == [list(r) for r in rows]


def test_rows_json_cannot_carry_go_as_msgpack() -> None:
    rows = [[1, "x"], [2, {1: "a filter's metadata with an int key"}]]
    data, encoding = encode_rows(rows)
    assert encoding == ROWS_MSGPACK
    assert unpack_rows(data, encoding) == rows


def test_bad_rows_and_unknown_encodings_are_refused() -> None:
    with pytest.raises(BadRequestError, match="unknown row encoding 'cbor'"):
        unpack_rows(b"[]", "cbor")
    with pytest.raises(BadRequestError, match="undecodable rows"):
        unpack_rows(b"[[1,", ROWS_JSON)
    with pytest.raises(BadRequestError, match="list of lists"):
        unpack_rows(b"[1, 2]", ROWS_JSON)
    assert unpack_rows(b"", ROWS_JSON) == []


def test_a_batch_from_an_older_proxy_names_no_encoding_and_is_read_as_msgpack() -> None:
    rows = [wire_row(RECORD.row())]
    # the message as proxies sent it before the encoding field existed
    old = {"source": {"node": "n", "service": "reviews"}, "fields": list(_RECORD_FIELDS),
           "records": pack_rows(rows), "count": 1}  # fmt: skip
    data = msgpack.packb(old, use_bin_type=True)
    batch = codec.decode(data, {codec.SCHEMA_HEADER: codec.schema_id(AccessLogBatch)}, AccessLogBatch)
    assert batch.encoding == ROWS_MSGPACK
    assert unpack_rows(batch.records, batch.encoding) == [list(r) for r in rows]
    [doc] = records_of(batch)
    assert doc["request_id"] == "rid-1" and doc["metadata"] == {"authz_policy": "ns/deny"}


def test_meshctl_logs_reads_json_batches_through_the_codec() -> None:
    data, encoding = encode_rows([wire_row(RECORD.row())])
    body, headers = codec.encode(AccessLogBatch(Source("n"), list(_RECORD_FIELDS), data, 1, encoding))
    [doc] = records_of(codec.decode(body, headers, AccessLogBatch))
    assert doc["start_time"] == "2023-11-14T22:13:20.123Z" and doc["duration"] == 13
    assert (doc["path"], doc["response_code"], doc["downstream_peer_principal"]) == (
        "/r?q=ü", 503, "spiffe://cluster.local/ns/default/sa/p",
    )  # fmt: skip
    rows = _span_rows()
    data, encoding = encode_rows(rows)
    body, headers = codec.encode(SpanBatch(Source("n"), {}, "", list(ROW), data, len(rows), encoding))
    batch = codec.decode(body, headers, SpanBatch)
    assert batch.encoding == ROWS_JSON and unpack_rows(batch.spans, batch.encoding) == [list(r) for r in rows]


def test_a_full_span_buffer_drops_the_new_span_and_counts_it() -> None:
    dropped = CounterChild()
    spans = SpanRecorder(capacity=2, dropped=dropped)
    for i in range(5):
        span = spans.start(f"s{i}", False, "4bf92f3577b34da6a3ce929d0e0e4736", f"{i:016x}", "", None, i, None)
        spans.end(span, False, i + 1, [])
    assert [r[3] for r in spans.drain()] == ["s0", "s1"] and dropped.value == 3


def _varied_rows() -> list[tuple[object, ...]]:
    """Rows as a batch has them: most fields repeat, times and ids change, one request differs."""
    rows = []
    for i in range(5):
        r = replace(
            RECORD, start_time=1_700_000_000.123456 + i / 7, duration_ms=12.625 + i, request_id=f"rid-{i}"
        )
        if i == 3:  # another status, no flags, no metadata
            r = replace(r, response_code=200, response_flags="-", metadata=None)
        rows.append(r.row())
    return rows


def test_access_logs_ship_as_columns_and_read_back_as_the_same_rows() -> None:
    rows = _varied_rows()
    body, headers = codec.encode(access_log_batch(Source("n"), rows))
    batch = codec.decode(body, headers, AccessLogBatch)
    assert batch.encoding == ROWS_JSON_COLUMNS_3 and batch.count == 5
    assert unpack_rows(batch.records, batch.encoding, batch.doubles) == [list(wire_row(r)) for r in rows]
    # a repeated value is packed once: the batch is well under 5 rows' size
    assert len(batch.records) < len(encode_rows([wire_row(r) for r in rows])[0]) / 2
    # meshctl logs renders them as it rendered rows
    data, encoding = encode_rows([wire_row(r) for r in rows])
    as_rows = AccessLogBatch(Source("n"), list(_RECORD_FIELDS), data, 5, encoding)
    assert records_of(batch) == records_of(as_rows)
    assert [d["request_id"] for d in records_of(batch)] == [f"rid-{i}" for i in range(5)]


def test_columns_keep_one_value_only_when_every_row_has_it_with_its_type() -> None:
    assert columns([]) == []
    assert columns([(1, "a", None)]) == [[1], ["a"], [None]]
    assert columns([(1, "a", 1.0), (1, "a", 1)]) == [[1], ["a"], [1.0, 1]]  # 1.0 and 1 stay apart
    assert columns([(True, "a"), (1, "b")]) == [[True, 1], ["a", "b"]]
    # -0.0 equals 0.0, but one of them alone would read back as the other
    assert [[str(v) for v in c] for c in columns([(0.0, -0.0), (-0.0, -0.0)])] == [["0.0", "-0.0"], ["-0.0"]]
    rows = [(1, "a", "x", None)] * 9
    rows[3] = (1, "b", "x", {"k": "v"})  # one row differs
    assert columns(rows) == [
        [1],
        ["a"] * 3 + ["b"] + ["a"] * 5,
        ["x"],
        [None] * 3 + [{"k": "v"}] + [None] * 5,
    ]
    data = encode_columns(columns([(0.5, "x"), (0.5, "y")]), 2)
    assert unpack_rows(data, ROWS_JSON_COLUMNS) == [[0.5, "x"], [0.5, "y"]]
    assert columns(rows, 2) == columns(rows)[:2]  # the first columns only (wire_columns: not the tails)
    assert columns(rows, 0) == []
    with pytest.raises(ValueError, match="rows of 4 and 5 values"):  # never cut short to the first width
        columns([*rows, (1, "a", "x", None, "newer")])


def test_columns_json_cannot_carry_go_as_msgpack_rows() -> None:
    rows = [replace(RECORD, metadata={1: "int key"}).row()]  # type: ignore[dict-item]
    batch = access_log_batch(Source("n"), rows)
    assert batch.encoding == ROWS_MSGPACK
    assert unpack_rows(batch.records, batch.encoding) == [list(wire_row(rows[0]))]


def test_bad_columns_and_encodings_of_newer_proxies_are_refused_clearly() -> None:
    with pytest.raises(BadRequestError, match="each column must hold 2 values or 1"):
        unpack_rows(b'[2, ["a", "b"], ["x", "y", "z"]]', ROWS_JSON_COLUMNS)
    with pytest.raises(BadRequestError, match=r"columns must be \[count, column, \.\.\.\]"):
        unpack_rows(b'[["a"]]', ROWS_JSON_COLUMNS)
    # what a reader older than ROWS_JSON_COLUMNS says of it, a reader of today says of a later encoding
    with pytest.raises(BadRequestError, match=r"unknown row encoding 'json-columns-v2'.*newer proxy"):
        unpack_rows(b"[]", "json-columns-v2")
    assert unpack_rows(b"[0]", ROWS_JSON_COLUMNS) == [] and unpack_rows(b"[2]", ROWS_JSON_COLUMNS) == [[], []]


def test_times_and_durations_near_rounding_edges_log_the_same_lines_as_columns() -> None:
    # times and durations next to a rounding edge (microsecond, millisecond, second; half a ms)
    starts = [1_700_000_000.0, 1_700_000_000.9999996, 1_700_000_000.0004995, 1_699_999_999.9995,
              1_700_000_000.123456, 1_700_000_000.0015004]  # fmt: skip
    durations = [0.0, 0.5, 1.5, 2.4999999, 12.5000001, 999.5]
    rows = [
        replace(RECORD, start_time=t, duration_ms=d, request_id=f"rid-{i}").row()
        for i, (t, d) in enumerate(zip(starts, durations, strict=True))
    ]
    data, encoding = encode_rows([wire_row(r) for r in rows])
    as_rows = AccessLogBatch(Source("n"), list(_RECORD_FIELDS), data, len(rows), encoding)
    as_columns = access_log_batch(Source("n"), rows)
    assert as_columns.encoding == ROWS_JSON_COLUMNS_3
    assert records_of(as_columns) == records_of(as_rows)
    old = AccessLogBatch(Source("n"), list(_RECORD_FIELDS), encode_columns(wire_columns(rows), len(rows)),
                         len(rows), ROWS_JSON_COLUMNS)  # fmt: skip
    assert records_of(old) == records_of(as_rows)
    assert [d["start_time"] for d in records_of(as_columns)][:2] == [
        "2023-11-14T22:13:20.000Z", "2023-11-14T22:13:21.000Z",
    ]  # fmt: skip


def test_queued_rows_are_19_items_and_ship_as_the_24_fields_of_their_records() -> None:
    # 19 items at most: CPython reuses freed tuples of up to 19 items (a 24-item row was a malloc and
    # a free per request); the six fields a route's requests share are one tail, split on the wire
    rows = _varied_rows()
    assert {len(r) for r in rows} == {19}
    assert [AccessLogRecord(*wire_row(r)) for r in rows] == [AccessLogRecord.from_row(r) for r in rows]
    assert wire_row(RECORD.row()) == tuple(getattr(RECORD, f) for f in _RECORD_FIELDS)
    assert wire_columns(rows) == columns([wire_row(r) for r in rows])


def test_tails_that_differ_or_are_only_equal_ship_field_by_field() -> None:
    shared = (None, "outbound|9080||reviews", "r1", None, None, "outbound")
    a = replace(RECORD, upstream_service_time=None, upstream_cluster="outbound|9080||reviews", route_name="r1",
                request_principal=None, metadata=None, direction="outbound").row()  # fmt: skip
    a = (*a[:TAIL], shared)
    b = replace(RECORD, route_name="r2").row()
    # equal, not the same tuple: 1 and 1.0 are equal in a tuple, the columns keep them apart
    c1, c2 = (replace(RECORD, upstream_service_time=v).row() for v in (1, 1.0))
    for rows in ([a, a, a], [a, b, a], [c1, c2], [a, (*a[:TAIL], tuple(shared))]):
        data = encode_columns(wire_columns(rows), len(rows))
        got = unpack_rows(data, ROWS_JSON_COLUMNS)
        assert got == [list(wire_row(r)) for r in rows]
        assert [type(g[10]) for g in got] == [type(wire_row(r)[10]) for r in rows]


def _bits(rows: list[list[object]]) -> list[list[object]]:
    """Rows with each float as its 8 bytes: equal only if bit for bit the same (-0.0 is not 0.0)."""
    return [[struct.pack("<d", v) if type(v) is float else (type(v), v) for v in r] for r in rows]


# floats next to rounding edges (the last digits of the shortest repr, ms and s boundaries), signed zeros,
# negatives; durations also the smallest subnormal and the largest double
EDGE_TIMES = [1_700_000_000.0, 1_700_000_000.9999996, 1_699_999_999.9995, 1_700_000_000.0004995, -0.0, 0.0,
              -1_700_000_000.0015004, math.nextafter(1_700_000_000.0, 0.0), 1_700_000_000.123456]  # fmt: skip
EDGE_DURATIONS = [0.1 + 0.2, 2.4999999999999996, 12.5000001, -0.0, 0.0, -1.5, 5e-324, 1.7976931348623157e308,
                  math.nextafter(1.0, 2.0)]  # fmt: skip


def test_float_columns_pack_only_columns_of_varying_finite_floats_as_little_endian_doubles() -> None:
    nan, inf = float("nan"), float("inf")
    cols = [[1.5, -0.0], [2.0], ["a", "b"], [1, 2.0], [0.5, nan], [0.5, inf], [True, 1.0], [5e-324, -2.5]]
    out, doubles = float_columns(cols)
    # one value or one non-float kept as JSON (an int stays an int); NaN and infinities stay JSON's null
    assert out == [0, [2.0], ["a", "b"], [1, 2.0], [0.5, nan], [0.5, inf], [True, 1.0], 1]
    assert doubles == struct.pack("<4d", 1.5, -0.0, 5e-324, -2.5)
    assert float_columns([]) == ([], b"")
    assert float_columns([[0.25]]) == ([[0.25]], b"")  # one row: nothing to pack


def test_access_logs_ship_floats_as_doubles_and_read_back_bit_for_bit() -> None:
    rows = [
        replace(RECORD, start_time=t, duration_ms=d, request_id=f"rid-{i}").row()
        for i, (t, d) in enumerate(zip(EDGE_TIMES, EDGE_DURATIONS, strict=True))
    ]
    body, headers = codec.encode(access_log_batch(Source("n"), rows))
    batch = codec.decode(body, headers, AccessLogBatch)
    assert batch.encoding == ROWS_JSON_COLUMNS_3
    # no envelope: the records are the JSON columns themselves, the doubles the batch's own field
    assert orjson.loads(batch.records)[0] == len(rows)
    assert len(batch.doubles) == 2 * 8 * len(rows) and b"1700000000.9999996" not in batch.records
    got = unpack_rows(batch.records, batch.encoding, batch.doubles)
    assert _bits(got) == _bits([list(wire_row(r)) for r in rows])
    # the same floats as the rows and the older encodings give: the same lines for meshctl logs
    data = encode_columns(wire_columns(rows), len(rows))
    assert _bits(unpack_rows(data, ROWS_JSON_COLUMNS)) == _bits(got)
    data = encode_columns_2(*float_columns(wire_columns(rows)), len(rows))
    assert _bits(unpack_rows(data, ROWS_JSON_COLUMNS_2)) == _bits(got)
    old = AccessLogBatch(Source("n"), list(_RECORD_FIELDS), data, len(rows), ROWS_JSON_COLUMNS_2)
    data, encoding = encode_rows([wire_row(r) for r in rows])
    as_rows = AccessLogBatch(Source("n"), list(_RECORD_FIELDS), data, len(rows), encoding)
    assert records_of(batch) == records_of(as_rows) == records_of(old)


def test_columns_3_doubles_are_checked_and_only_taken_with_columns_3() -> None:
    cols, doubles = float_columns([[0.5, 1.5], ["x"]])
    data = encode_columns(cols, 2)
    assert unpack_rows(data, ROWS_JSON_COLUMNS_3, doubles) == [[0.5, "x"], [1.5, "x"]]
    bad = {
        "8 bytes each, not 7": (b"[2, 0]", b"1234567"),
        "column 0: no run 1 of 2 doubles": (b"[2, 1]", struct.pack("<2d", 1, 2)),
        "2 doubles for 0 packed columns": (b'[2, ["a", "b"]]', struct.pack("<2d", 1, 2)),
        "no run 0 of 2 doubles": (b"[2, 0]", b""),  # the doubles left out
        "undecodable rows": (b"", struct.pack("<2d", 1, 2)),  # the columns left out
    }
    for message, (json, dbl) in bad.items():
        with pytest.raises(BadRequestError, match=message):
            unpack_rows(json, ROWS_JSON_COLUMNS_3, dbl)
    for encoding in (ROWS_JSON_COLUMNS_2, ROWS_JSON_COLUMNS, ROWS_JSON, ROWS_MSGPACK):
        with pytest.raises(BadRequestError, match=f"16 bytes of doubles with row encoding '{encoding}'"):
            unpack_rows(data, encoding, doubles)
    with pytest.raises(BadRequestError, match=r"unknown row encoding 'json-columns-4'.*newer proxy"):
        unpack_rows(data, "json-columns-4", doubles)


def test_older_columns_batches_stay_readable_and_bad_doubles_are_refused() -> None:
    rows = _varied_rows()
    old = encode_columns(wire_columns(rows), len(rows))
    assert unpack_rows(old, ROWS_JSON_COLUMNS) == [list(wire_row(r)) for r in rows]
    assert unpack_rows(encode_columns_2(*float_columns([[0.5, 1.5], ["x"]]), 2), ROWS_JSON_COLUMNS_2) == [
        [0.5, "x"], [1.5, "x"],
    ]  # fmt: skip
    bad = {
        "must be \\[json, doubles\\]": msgpack.packb([b"[1]"]),
        "8 bytes each, not 7": msgpack.packb([b"[2, 0]", b"1234567"]),
        "column 0: no run 1 of 2 doubles": msgpack.packb([b"[2, 1]", struct.pack("<2d", 1, 2)]),
        "2 doubles for 0 packed columns": msgpack.packb([b'[2, ["a", "b"]]', struct.pack("<2d", 1, 2)]),
        "each column must hold 2 values or 1": msgpack.packb(
            [b'[2, 0, ["a", "b", "c"]]', struct.pack("<2d", 1, 2)]
        ),
        "undecodable rows": b"\xc1",
    }
    for message, data in bad.items():
        with pytest.raises(BadRequestError, match=message):
            unpack_rows(data, ROWS_JSON_COLUMNS_2)


@pytest.mark.parametrize("n", [0, 1, 255, 256, 65535, 65536])
def test_columns_2_envelope_is_msgpacks_byte_for_byte_at_every_bin_size(n: int) -> None:
    # encode_columns_2 writes the [json, doubles] envelope itself: a reader's msgpack must see the very
    # bytes msgpack.packb writes, whichever bin head (8, 16 or 32 bit length) each part needs
    doubles = struct.pack(f"<{n // 8}d", *([0.5] * (n // 8)))
    cols: list[Any] = [["x" * n]]
    json = orjson.dumps([1, *cols])
    assert encode_columns_2(cols, doubles, 1) == msgpack.packb([json, doubles], use_bin_type=True)
