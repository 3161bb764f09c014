"""Access-log records kept as columns as requests end (telemetry/logcolumns.py) ship and read back as
the same records as when queued as rows."""

from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbus.bus import codec
from meshbus.bus.schemas.telemetry import (
    ROWS_JSON_COLUMNS_3,
    ROWS_MSGPACK,
    AccessLogBatch,
    Source,
    unpack_rows,
)
from meshbus.proxy.mesh.telemetry_ship import access_log_batch, access_log_columns_batch, access_log_messages
from meshbus.telemetry.accesslog import TAIL, AccessLogger, AccessLogRecord, AccessLogRow, wire_row
from meshbus.telemetry.accesslog_writer import AccessLogWriter
from meshbus.telemetry.logcolumns import LogColumns
from meshbus.telemetry.metrics import CounterChild

pytestmark = pytest.mark.unit

RECORD = AccessLogRecord(1_700_000_000.123456, "GET", "/r", "HTTP/1.1", 200, "-", None, 7, 19, 12.625, None,
                         "10.0.0.9", "wrk", "rid-0", "reviews:9080", "10.0.0.7:9080", "outbound|9080||reviews",
                         "default", "10.0.0.3", "spiffe://p", "4bf92f3577b34da6a3ce929d0e0e4736", None, None,
                         "outbound")  # fmt: skip
SHARED_TAIL = RECORD.row()[TAIL]

# a few values each field takes: equal strings that are not the same object, 1 and 1.0 and True (equal,
# of other types), None, a dict, signed zeros and floats at rounding edges
_SAME_TEXT = ["GET", "".join(["G", "ET"]), "POST", None]
_NUMBERS = [200, 200.0, True, 0, 503, 2**40]
_FLOATS = [1_700_000_000.9999996, -0.0, 0.0, 5e-324, 2.4999999999999996, 12.625]
# start times and durations: mostly floats (kept as doubles), now and then a value that is not one (the
# columns then go back to lists, mid-batch or from the first record)
_TIMES = _FLOATS * 3 + [0, 7, True]
_TAILS = [SHARED_TAIL, tuple(SHARED_TAIL), (1, "c", "r", None, {"k": "v"}, "inbound"), (1.0, None, "r", "p", None, None),
          (0.0, None, "r", "p", None, None), (-0.0, None, "r", "p", None, None)]  # fmt: skip


def _bits(rows: list[Any]) -> list[list[object]]:
    """Each float as its 8 bytes, each value with its type: equal only if the same to the bit."""
    return [[struct.pack("<d", v) if type(v) is float else (type(v), v) for v in r] for r in rows]


def _read(batch: AccessLogBatch) -> list[list[Any]]:
    body, headers = codec.encode(batch)
    got = codec.decode(body, headers, AccessLogBatch)
    return unpack_rows(got.records, got.encoding, got.doubles)


def _shipped(acc: LogColumns, most: int = 500) -> list[list[Any]]:
    out: list[list[Any]] = []
    # whole, or cut as columns (as a drain too large for one message is) in parts of ``most``
    parts = [acc] if acc.n <= most else [acc.part(i, min(i + most, acc.n)) for i in range(0, acc.n, most)]
    for part in parts:
        out.extend(_read(access_log_columns_batch(Source("n"), part)))
    return out


row_st = st.tuples(
    st.sampled_from(_TIMES),  # start
    st.sampled_from(_SAME_TEXT),  # method
    st.sampled_from(["/a", "/b", None]),  # path
    st.sampled_from(_SAME_TEXT),  # protocol
    st.sampled_from(_NUMBERS),  # status
    st.sampled_from(["-", "UH"]),  # flags
    st.sampled_from([None, "details"]),  # details
    st.sampled_from(_NUMBERS),  # bytes received
    st.sampled_from(_NUMBERS),  # bytes sent
    st.sampled_from(_TIMES),  # duration
    *(st.sampled_from(_SAME_TEXT) for _ in range(8)),  # xff .. trace id
    st.sampled_from(_TAILS),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(row_st, max_size=12), min_size=1, max_size=3), st.integers(1, 8))
def test_records_kept_as_columns_ship_bit_for_bit_as_the_rows_across_flushes(
    flushes: list[list[AccessLogRow]], most: int
) -> None:
    logger = AccessLogger()
    logger.use_columns(True)
    for rows in flushes:
        for r in rows:
            if type(r[0]) is float and type(r[9]) is float:
                logger.add(*r)  # the proxy's: floats
            else:
                logger.log_row(r)  # an int stays an int
        acc = logger.drain_columns()
        assert acc.n == len(rows) and logger.pending == 0
        want = _bits([wire_row(r) for r in rows])
        assert _bits(_shipped(acc, most)) == want
        assert _bits(_read(access_log_batch(Source("n"), rows))) == want  # as rows: the same
        assert _bits(acc.rows()) == _bits(rows)  # rows for a sink that takes rows: the same objects' values


def test_a_steady_batch_stores_a_repeated_field_once_and_ships_as_columns_3() -> None:
    logger = AccessLogger()
    logger.use_columns(True)
    rows = [
        replace(RECORD, start_time=1_700_000_000.0 + i / 3, request_id=f"rid-{i}").row() for i in range(50)
    ]
    rows = [(*r[:TAIL], SHARED_TAIL) for r in rows]  # a route's requests share one tail (observe.py)
    for r in rows:
        logger.add(*r)
    acc = logger.drain_columns()
    assert acc.c_method is None and acc.c_tail is None and acc.c_status is None  # kept once
    assert acc.packed and acc.start == []  # start times and durations as doubles, no float kept
    batch = access_log_columns_batch(Source("n"), acc)
    assert batch.encoding == ROWS_JSON_COLUMNS_3 and len(batch.doubles) == 2 * 8 * 50
    assert _bits(_read(batch)) == _bits([wire_row(r) for r in rows])


def _logged(rows: list[AccessLogRow]) -> LogColumns:
    logger = AccessLogger()
    logger.use_columns(True)
    for r in rows:
        logger.add(*r)
    return logger.drain_columns()


def test_a_drain_that_fits_one_message_ships_as_one_whatever_its_count() -> None:
    rows = [
        replace(RECORD, start_time=1_700_000_000.0 + i / 7, request_id=f"rid-{i}").row() for i in range(800)
    ]
    [(data, headers, n)] = access_log_messages(codec.Encoder(), Source("n"), _logged(rows), 1024 * 1024)
    assert n == 800
    assert _bits(unpack_rows(*_fields(data, headers))) == _bits([wire_row(r) for r in rows])


def test_a_drain_past_the_payload_limit_is_cut_until_each_message_fits() -> None:
    rows = [replace(RECORD, path=f"/{i:04d}" + "p" * 2000, request_id=f"rid-{i}").row() for i in range(40)]
    rows[7] = replace(RECORD, path="/" + "q" * 30_000).row()  # one record alone over the limit: sent alone
    messages = access_log_messages(codec.Encoder(), Source("n"), _logged(rows), 20_000)
    got = [r for data, headers, _n in messages for r in unpack_rows(*_fields(data, headers))]
    assert _bits(got) == _bits([wire_row(r) for r in rows])  # every record, in order
    assert [n for _d, _h, n in messages if n > 1] and all(
        len(data) <= 20_000 * 0.8 for data, _h, n in messages if n > 1
    )
    assert [n for data, _h, n in messages if len(data) > 20_000 * 0.8] == [1]


def _fields(data: bytes, headers: dict[str, str]) -> tuple[bytes, str, bytes]:
    got = codec.decode(data, headers, AccessLogBatch)
    return got.records, got.encoding, got.doubles


def test_records_json_cannot_carry_ship_as_msgpack_rows_from_columns() -> None:
    acc = LogColumns()
    bad = replace(RECORD, metadata={1: "int key"}).row()  # type: ignore[dict-item]
    acc.add_row(RECORD.row())
    acc.add_row(bad)
    batch = access_log_columns_batch(Source("n"), acc)
    assert batch.encoding == ROWS_MSGPACK
    assert unpack_rows(batch.records, batch.encoding) == [list(wire_row(RECORD.row())), list(wire_row(bad))]


def test_a_full_column_logger_drops_the_new_record_and_counts_it() -> None:
    dropped = CounterChild()
    logger = AccessLogger(capacity=3, dropped=dropped)
    logger.use_columns(True)
    rows = [replace(RECORD, request_id=f"rid-{i}").row() for i in range(5)]
    for r in rows[:4]:
        logger.add(*r)
    logger.log_row(rows[4])
    assert dropped.value == 2 and logger.pending == 3
    assert [r[12] for r in logger.drain()] == ["rid-0", "rid-1", "rid-2"]  # drain(): rows, as before


def test_switching_between_rows_and_columns_keeps_queued_records_in_order() -> None:
    logger = AccessLogger()
    rows = [replace(RECORD, request_id=f"rid-{i}", response_code=200 + i % 2).row() for i in range(6)]
    logger.add(*rows[0])
    logger.use_columns(True)  # the queued row goes into the columns
    logger.log_row(rows[1])
    logger.add(*rows[2])
    logger.use_columns(False)  # the columns' records back to rows
    logger.add(*rows[3])
    assert logger.drain() == rows[:4]
    logger.log_row(rows[4])
    logger.add(*rows[5])
    acc = logger.drain_columns()  # from rows too
    assert acc.rows() == rows[4:] and logger.drain() == []


class _Columns:
    def __init__(self) -> None:
        self.got: list[LogColumns] = []
        self.rows: list[AccessLogRow] = []

    async def write_rows(self, rows: list[AccessLogRow]) -> None:
        self.rows.extend(rows)

    async def write_columns(self, batch: LogColumns) -> None:
        self.got.append(batch)

    async def close(self) -> None:
        pass


class _Bytes:
    def __init__(self) -> None:
        self.data = b""

    async def write(self, data: bytes) -> None:
        self.data += data

    async def close(self) -> None:
        pass


@pytest.mark.timeout(10)
async def test_the_writer_keeps_columns_only_while_every_sink_takes_them() -> None:
    logger = AccessLogger()
    sink = _Columns()
    writer = AccessLogWriter(logger, sink)
    assert logger.cols is not None
    logger.add(*RECORD.row())
    assert await writer.flush() == 1
    assert [b.rows() for b in sink.got] == [[RECORD.row()]] and sink.rows == []
    logger.add(*RECORD.row())
    text = _Bytes()
    writer.add_sink(text)  # a sink of lines: rows again, the queued record kept
    assert logger.cols is None
    assert await writer.flush() == 1 and text.data.count(b"\n") == 1
    assert len(sink.got) == 1 and sink.rows == [RECORD.row()]


async def test_a_column_sink_that_fails_counts_its_records_as_dropped() -> None:
    class Down(_Columns):
        async def write_columns(self, batch: LogColumns) -> None:
            raise ConnectionError("down")

    dropped = CounterChild()
    logger = AccessLogger()
    writer = AccessLogWriter(logger, Down(), dropped=dropped)
    logger.add(*RECORD.row())
    logger.add(*RECORD.row())
    assert await writer.flush() == 0 and dropped.value == 2 and logger.pending == 0
