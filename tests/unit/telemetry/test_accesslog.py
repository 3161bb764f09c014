from __future__ import annotations

import io
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshbus.telemetry.accesslog import (
    FIELDS,
    NULL_ACCESS_LOG,
    AccessLogger,
    AccessLogRecord,
    AccessLogRow,
    format_json_line,
    format_json_lines,
    format_json_row,
    format_json_rows,
    format_start_time,
    format_text_line,
    format_text_lines,
    wire_row,
)
from meshbus.telemetry.accesslog_writer import AccessLogWriter, FileSink, LoggerSink, StreamSink
from meshbus.telemetry.errors import ConfigError
from meshbus.telemetry.metrics import InternalMetrics, Registry

pytestmark = pytest.mark.unit

T0 = 1_795_000_000.123  # 2026-11-18T...Z


def _record(i: int = 0, **kw: object) -> AccessLogRecord:
    base: dict[str, object] = {
        "start_time": T0,
        "method": "GET",
        "path": f"/reviews/{i}",
        "protocol": "HTTP/1.1",
        "response_code": 200,
        "bytes_received": 0,
        "bytes_sent": 295,
        "duration_ms": 12.6,
        "upstream_service_time": 11.2,
        "user_agent": "curl/8.5",
        "request_id": f"req-{i}",
        "authority": "reviews:9080",
        "upstream_host": "10.0.0.7:9080",
        "upstream_cluster": "outbound|9080||reviews.default.svc.cluster.local",
    }
    base.update(kw)
    return AccessLogRecord(**base)  # type: ignore[arg-type]


def test_queue_is_bounded_and_drops_are_counted_in_the_metric() -> None:
    r = Registry()
    dropped = InternalMetrics(r).telemetry_dropped.labels("access_log")
    logger = AccessLogger(capacity=3, dropped=dropped)
    for i in range(5):
        logger.log(_record(i))
    assert logger.pending == 3
    assert logger.dropped == 2 and dropped.value == 2
    got = logger.drain()
    ids = [AccessLogRecord.from_row(x).request_id for x in got]
    assert ids == ["req-0", "req-1", "req-2"]  # the newest are dropped
    assert logger.pending == 0 and logger.drain() == []
    logger.log(_record(9))
    assert logger.pending == 1 and logger.dropped == 2


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="capacity"):
        AccessLogger(capacity=0)


def test_null_logger_keeps_nothing() -> None:
    NULL_ACCESS_LOG.log(_record())
    assert NULL_ACCESS_LOG.drain() == []


def test_start_time_format_is_iso8601_utc_milliseconds() -> None:
    assert format_start_time(0.5) == "1970-01-01T00:00:00.500Z"


def test_json_lines_use_istio_keys_one_object_per_line() -> None:
    data = format_json_lines([_record(1), _record(2, response_flags="UH", response_code=503, trace_id=None)])
    assert data.endswith(b"\n") and data.count(b"\n") == 2
    first, second = (json.loads(line) for line in data.splitlines())
    assert first["start_time"] == format_start_time(T0)
    assert first["method"] == "GET" and first["path"] == "/reviews/1"
    assert first["duration"] == 13 and first["upstream_service_time"] == 11  # whole ms, as Envoy
    assert first["response_flags"] == "-" and first["x_forwarded_for"] is None
    assert second["response_code"] == 503 and second["response_flags"] == "UH"
    assert set(first) >= {
        "start_time", "method", "path", "protocol", "response_code", "response_flags", "bytes_received",
        "bytes_sent", "duration", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id",
        "authority", "upstream_host", "upstream_cluster", "route_name", "downstream_remote_address",
        "downstream_peer_principal", "trace_id", "request_principal",
    }  # fmt: skip


def test_fields_filters_add_are_a_metadata_object_only_when_present() -> None:
    """The authorization filter's deciding policy, for instance (filter_state["access_log"])."""
    md = {"authz_result": "denied", "authz_policy": "ns[default]-policy[no-admin]-rule[0]"}
    with_md, without = (
        json.loads(line) for line in format_json_lines([_record(1, metadata=md), _record(2)]).splitlines()
    )
    assert with_md["metadata"] == md and "metadata" not in without


def test_text_line_is_envoys_default_format() -> None:
    line = format_text_line(_record(3))
    assert line == (
        f'[{format_start_time(T0)}] "GET /reviews/3 HTTP/1.1" 200 - 0 295 13 11 '
        '"-" "curl/8.5" "req-3" "reviews:9080" "10.0.0.7:9080"'
    )


class MemorySink:
    def __init__(self, fail: bool = False) -> None:
        self.data = b""
        self.fail = fail
        self.closed = False

    async def write(self, data: bytes) -> None:
        if self.fail:
            raise OSError("disk full")
        self.data += data

    async def close(self) -> None:
        self.closed = True


async def test_writer_flushes_in_chunks_and_on_stop() -> None:
    logger = AccessLogger(capacity=100)
    sink = MemorySink()
    writer = AccessLogWriter(logger, sink, chunk=2, interval=60)
    for i in range(5):
        logger.log(_record(i))
    assert await writer.flush() == 5
    assert [json.loads(x)["request_id"] for x in sink.data.splitlines()] == [f"req-{i}" for i in range(5)]
    async with writer:
        logger.log(_record(7))
    assert sink.closed and writer.written == 6
    assert json.loads(sink.data.splitlines()[-1])["request_id"] == "req-7"


async def test_writer_counts_failed_writes_as_dropped(caplog: pytest.LogCaptureFixture) -> None:
    logger = AccessLogger()
    dropped = InternalMetrics(Registry()).telemetry_dropped.labels("access_log")
    writer = AccessLogWriter(logger, MemorySink(fail=True), dropped=dropped)
    logger.log(_record())
    logger.log(_record())
    with caplog.at_level(logging.WARNING):
        assert await writer.flush() == 0
    assert dropped.value == 2
    assert "dropped 2 records" in caplog.text


async def test_text_format_file_and_stream_sinks(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    logger = AccessLogger()
    async with AccessLogWriter(logger, FileSink(path), fmt="text"):
        logger.log(_record(1))
    assert path.read_text().startswith("[") and path.read_text().count("\n") == 1
    buf = io.BytesIO()
    writer = AccessLogWriter(logger, StreamSink(buf))
    logger.log(_record(2))
    await writer.stop()
    assert json.loads(buf.getvalue())["request_id"] == "req-2"


async def test_logger_sink_emits_each_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = AccessLogger()
    writer = AccessLogWriter(logger, LoggerSink())
    logger.log(_record(1))
    logger.log(_record(2))
    with caplog.at_level(logging.INFO, logger="meshbus.access"):
        await writer.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "meshbus.access"]
    assert [json.loads(x)["request_id"] for x in lines] == ["req-1", "req-2"]


def test_writer_rejects_bad_config() -> None:
    with pytest.raises(ConfigError, match="format"):
        AccessLogWriter(AccessLogger(), MemorySink(), fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="interval"):
        AccessLogWriter(AccessLogger(), MemorySink(), interval=0)


async def test_writer_flushes_periodically_while_running() -> None:
    import asyncio

    written = asyncio.Event()

    class SignalSink(MemorySink):
        async def write(self, data: bytes) -> None:
            await super().write(data)
            written.set()

    logger = AccessLogger()
    sink = SignalSink()
    async with AccessLogWriter(logger, sink, interval=0.01):
        logger.log(_record(4))
        await asyncio.wait_for(written.wait(), 5)
        assert json.loads(sink.data)["request_id"] == "req-4"


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
def test_cached_start_time_formatting_matches_datetime(t: float) -> None:
    expected = datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert format_start_time(t) == expected


def test_field_order_is_stable_for_positional_construction() -> None:
    from dataclasses import fields as dc_fields

    assert [f.name for f in dc_fields(AccessLogRecord)] == [
        "start_time", "method", "path", "protocol", "response_code", "response_flags",
        "response_code_details", "bytes_received", "bytes_sent", "duration_ms", "upstream_service_time",
        "x_forwarded_for", "user_agent", "request_id", "authority", "upstream_host", "upstream_cluster",
        "route_name", "downstream_remote_address", "downstream_peer_principal", "trace_id",
        "request_principal", "metadata", "direction",
    ]  # fmt: skip
    assert tuple(f.name for f in dc_fields(AccessLogRecord)) == FIELDS
    r = AccessLogRecord(1.0, "GET", trace_id="t", request_principal="iss/sub")
    assert dict(zip(FIELDS, wire_row(r.row()), strict=True)) == {
        f.name: getattr(r, f.name) for f in dc_fields(AccessLogRecord)
    }


def test_init_takes_the_fields_in_order_with_their_defaults() -> None:
    """The hand-written __init__ (see AccessLogRecord) agrees with the declared fields."""
    from dataclasses import MISSING
    from dataclasses import fields as dc_fields

    # distinct values of each field's type (compiled, the types are checked)
    values: list[object] = [2.5, "m", "p", "HTTP/2", 201, "UH", "d", 3, 4, 5.5, 6.5]
    values += [f"s{i}" for i in range(11)] + [{"k": "v"}, "inbound"]
    assert len(values) == len(FIELDS)
    r = AccessLogRecord(*values)  # type: ignore[arg-type]
    assert [getattr(r, name) for name in FIELDS] == values
    bare = AccessLogRecord(1.0)
    for f in dc_fields(AccessLogRecord)[1:]:
        assert f.default is not MISSING and getattr(bare, f.name) == f.default, f.name
    assert AccessLogRecord(1.0, direction="inbound").direction == "inbound"


_text = st.one_of(st.none(), st.text(max_size=40))


_records = st.lists(
    st.builds(
        AccessLogRecord,
        start_time=st.floats(min_value=0, max_value=4e9),
        method=_text,
        path=_text,
        protocol=_text,
        response_code=st.integers(0, 599),
        response_flags=st.sampled_from(["-", "UH", "UF,URX", 'odd"flag\\']),
        response_code_details=_text,
        bytes_received=st.integers(0, 1 << 40),
        bytes_sent=st.integers(0, 1 << 40),
        duration_ms=st.floats(min_value=0, max_value=1e7),
        upstream_service_time=st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
        x_forwarded_for=_text,
        user_agent=_text,
        request_id=_text,
        authority=_text,
        upstream_host=_text,
        upstream_cluster=_text,
        route_name=_text,
        downstream_remote_address=_text,
        downstream_peer_principal=_text,
        trace_id=_text,
        metadata=st.one_of(
            st.none(), st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3)
        ),
    ),
    max_size=5,
)


@given(_records)
def test_json_lines_are_exactly_the_istio_json_objects(records: list[AccessLogRecord]) -> None:
    from meshbus.telemetry.accesslog import to_json_dict

    data = format_json_lines(records)
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(records) + 1  # one line each, escapes keep them whole
    assert [json.loads(line) for line in lines[:-1]] == [to_json_dict(r) for r in records]
    assert [list(json.loads(line)) for line in lines[:-1]] == [list(to_json_dict(r)) for r in records]
    # byte for byte what orjson makes of the dict (format_json_line builds it from cached pieces)
    assert data == b"".join(orjson.dumps(to_json_dict(r)) + b"\n" for r in records)


def test_json_lines_stay_right_for_many_unique_values() -> None:
    from meshbus.telemetry.accesslog import to_json_dict

    records = [_record(i, user_agent=f'agent "{i}"\n') for i in range(10_000)]
    for _ in range(2):
        data = format_json_lines(records)
        assert data == b"".join(orjson.dumps(to_json_dict(r)) + b"\n" for r in records)  # caches cleared
        lines = data.splitlines()
        assert len(lines) == len(records)
        for i in (0, 4095, 4096, 9999):
            obj = json.loads(lines[i])
            assert obj["path"] == f"/reviews/{i}" and obj["user_agent"] == f'agent "{i}"\n'


# ---- lines formatted as each request ends (AccessLogger.line, set by the writer) -----------------------


async def _write_through_logger(records: list[AccessLogRecord], fmt: str) -> tuple[bytes, list[bytes]]:
    """The bytes a writer puts in a file sink of ``fmt`` for ``records`` logged one by one, and the
    lines the logger held before the flush."""
    logger = AccessLogger()
    sink = MemorySink()
    writer = AccessLogWriter(logger, sink, fmt=fmt, per_request=True)  # type: ignore[arg-type]
    for r in records:
        logger.log(r)
    held = list(logger._lines)
    await writer.flush()
    return sink.data, held


@given(_records)
def test_lines_formatted_per_request_are_byte_for_byte_the_batch_format(
    records: list[AccessLogRecord],
) -> None:
    import asyncio

    for fmt, batch in (("json", format_json_lines), ("text", format_text_lines)):
        data, held = asyncio.run(_write_through_logger(records, fmt))
        assert data == batch(records), fmt
        assert len(held) == len(records)  # formatted when logged, not by the writer


async def test_log_formats_the_line_at_once_and_the_writer_only_joins() -> None:
    default = AccessLogger()
    AccessLogWriter(default, MemorySink())
    default.log(_record(1))
    assert not default.line and default.drain_lines() == []  # by default the writer formats the records
    logger = AccessLogger()
    sink = MemorySink()
    writer = AccessLogWriter(logger, sink, per_request=True)
    logger.log(_record(1))
    assert logger._lines == [format_json_line(_record(1))]
    assert await writer.flush() == 1
    assert logger._lines == [] and sink.data == format_json_lines([_record(1)])


async def test_other_formats_and_record_sinks_still_get_every_record() -> None:
    class Records:
        def __init__(self) -> None:
            self.got: list[AccessLogRow] = []

        async def write_rows(self, rows: list[AccessLogRow]) -> None:
            self.got += rows

        async def close(self) -> None:
            pass

    logger = AccessLogger()
    early = _record(0)
    logger.log(early)  # queued before the writer set the logger's line: formatted by the writer
    json_sink, text_sink, rec_sink = MemorySink(), MemorySink(), Records()
    writer = AccessLogWriter(logger, json_sink, per_request=True)
    writer.add_sink(text_sink, "text")
    writer.add_sink(rec_sink)
    assert await writer.flush() == 1 and json_sink.data == format_json_lines([early])
    later = [_record(i) for i in range(1, 4)]
    for r in later:
        logger.log(r)
    assert await writer.flush() == 3
    assert json_sink.data == format_json_lines([early, *later])
    assert text_sink.data == format_text_lines([early, *later])
    assert rec_sink.got == [r.row() for r in (early, *later)]


async def test_a_record_its_format_cannot_carry_is_dropped_alone_and_counted() -> None:
    dropped = InternalMetrics(Registry()).telemetry_dropped.labels("access_log")
    logger = AccessLogger(dropped=dropped)
    sink = MemorySink()
    writer = AccessLogWriter(logger, sink, dropped=dropped, per_request=True)
    bad = _record(1, metadata={1: "not a str key"})  # type: ignore[dict-item]
    logger.log(_record(0))
    logger.log(bad)  # orjson refuses a non-str key
    logger.log(_record(2))
    assert dropped.value == 1
    assert await writer.flush() == 2
    assert sink.data == format_json_lines([_record(0), _record(2)])


@given(
    st.one_of(
        st.floats(allow_nan=False, allow_infinity=False), st.integers(-(10**6), 10**6).map(lambda i: i / 2)
    )
)
def test_compiled_round_is_pythons_round(v: float) -> None:
    """format_json_line rounds durations and start-time fractions without the builtin (halves to even)."""
    from meshbus.telemetry.accesslog import _round

    assert _round(v) == round(v)


@given(st.one_of(st.none(), st.text(), st.text(alphabet=st.characters(max_codepoint=127))))
def test_unescaped_strings_are_quoted_as_orjson_quotes_them(s: str | None) -> None:
    from meshbus.telemetry.accesslog import _js

    assert _js(s).encode() == orjson.dumps(s)


async def test_writer_gives_the_loop_back_once_a_turn_took_its_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Records that take 60 us each to format (long paths, a loaded core): with the default 50 us
    # budget the writer yields after every slice of DEFAULT_CHUNK records, so a request waits for
    # 8 records' worth (~0.5 ms here), not for a fixed 64-record chunk (~4 ms).
    import asyncio
    import time

    import meshbus.telemetry.accesslog_writer as writer_mod

    done = 0

    def slow(records: list[AccessLogRow]) -> bytes:
        nonlocal done
        for _ in records:
            end = time.perf_counter() + 60e-6
            while time.perf_counter() < end:
                pass
            done += 1
        return format_json_rows(records)

    monkeypatch.setitem(writer_mod._FORMATTERS, "json", slow)
    logger = AccessLogger(capacity=1000)
    sink = MemorySink()
    writer = AccessLogWriter(logger, sink, interval=60)
    for i in range(200):
        logger.log(_record(i))
    most, seen, stop = 0, 0, False

    async def ticker() -> None:  # one step per loop turn: how many records were formatted in between
        nonlocal most, seen
        while not stop:
            most, seen = max(most, done - seen), done
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    assert await writer.flush() == 200
    stop = True
    await task
    assert len(sink.data.splitlines()) == 200
    assert 0 < most <= 8, most  # DEFAULT_CHUNK


@given(_records)
def test_a_row_is_its_record_and_formats_as_the_record(records: list[AccessLogRecord]) -> None:
    from meshbus.telemetry.accesslog import format_text_row

    for r in records:
        row = r.row()
        assert AccessLogRecord.from_row(row) == r
        assert format_json_row(row) == format_json_line(r)
        assert format_text_row(row) == format_text_line(r)


def test_log_row_queues_the_row_itself_and_log_the_records_row() -> None:
    logger = AccessLogger()
    row = _record(1).row()
    logger.log_row(row)
    logger.log(_record(2))
    got = logger.drain()
    assert got[0] is row and got[1] == _record(2).row()
    NULL_ACCESS_LOG.log_row(row)
    assert NULL_ACCESS_LOG.drain() == []


# A sidecar's rows repeat most values from one request to the next, which the JSON lines reuse: drawn
# from small pools (equal strings that are not one object, 0.0 and -0.0, equal dicts in
# two orders, one tail object shared by many rows or a new one each), and formatted in slices, so the
# reused pieces meet rows that differ from the last one in any field.
_fresh = st.sampled_from([None, "a", "GET", 'q"x', "é", "\x7f"]).map(
    lambda s: None if s is None else "".join(list(s))
)
_nums = st.sampled_from([0, 1, 200, 100000])
_ms_values = st.sampled_from([None, 0.0, -0.0, 0.5, 1.5, 2.5, 999.6, 1234.0])
_tail_pool = [(None, "c", "r", None, None, "outbound"), (1.5, "c", "r", "p", {"a": "1", "b": "2"}, "inbound")]
_tails = st.one_of(
    st.sampled_from(_tail_pool),
    st.tuples(
        _ms_values, _fresh, _fresh, st.sampled_from([None, "p"]),
        st.sampled_from([None, {}, {"a": "1", "b": "2"}, {"b": "2", "a": "1"}, {"k": 'v"\n'}]),
        st.sampled_from(["inbound", "outbound"]),
    ),
)  # fmt: skip
_rows = st.lists(
    st.tuples(
        st.sampled_from([1.0, 1.0005, 1.9995, 2.25]), _fresh, _fresh, _fresh, _nums,
        st.sampled_from(["-", "UH", 'o"f']).map(lambda s: "".join(list(s))), _fresh, _nums,
        _nums, _ms_values.filter(lambda v: v is not None), _fresh, _fresh,
        st.one_of(_fresh, st.uuids().map(str)), _fresh, _fresh, _fresh, _fresh, _fresh, _tails,
    ),
    max_size=30,
)  # fmt: skip


@given(_rows, st.integers(1, 9))
def test_json_lines_of_repeating_rows_are_exactly_the_istio_json_objects(
    rows: list[AccessLogRow], step: int
) -> None:
    from meshbus.telemetry.accesslog import to_json_dict

    lines = [orjson.dumps(to_json_dict(AccessLogRecord.from_row(r))) + b"\n" for r in rows]
    data = b"".join(format_json_rows(rows[i : i + step]) for i in range(0, len(rows), step))
    assert data == b"".join(lines)
    assert [format_json_row(r) for r in rows] == lines
