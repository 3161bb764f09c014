"""A proxy's shipping (proxy/mesh/telemetry_ship.py) to a real meshbus-telemetry over a real
nats-server: span rows and access-log rows go as JSON columns, the collector exports the spans with
their HTTP attributes, and ``meshctl logs`` reads the records back from the stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.telemetry import AccessLogBatch, Source, SpanBatch
from meshbus.control.cli.telemetry_cmds import read_stream, records_of
from meshbus.proxy.filters.spans import SpanRecorder
from meshbus.proxy.mesh.telemetry_ship import BusSink, TelemetryShipper
from meshbus.telemetry.accesslog import AccessLogger, AccessLogRecord
from meshbus.telemetry.accesslog_writer import AccessLogWriter
from meshbus.telemetry.metrics import InternalMetrics, Registry
from tests.integration.telemetry.test_collector import replica, until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

T = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_spans_and_access_logs_as_json_columns_reach_the_collector_and_meshctl(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str, tmp_path: Path
) -> None:
    path = tmp_path / "spans.jsonl"
    registry = Registry()
    dropped = InternalMetrics(registry).telemetry_dropped.labels
    source = Source("p1", "reviews", "default", "reviews-v1")
    async with replica(nats_server.url, subject_root, spans_file=str(path)):
        spans = SpanRecorder(dropped=dropped("spans"))
        span = spans.start("GET reviews", True, T, "00f067aa0ba902b7", "", None, 1_700_000_000_000_000_000,
                           {"team": "bookinfo"})  # fmt: skip
        spans.end(span, False, 1_700_000_000_250_000_000,
                  ["GET", "/r/0?x=1", "reviews:9080", "1.1", "rid-1", "wrk", "10.0.0.3", None, "r", 9080, 503,
                   "UF", None, None, "p1"])  # fmt: skip
        shipper = TelemetryShipper(
            bus, source, registry, spans, dropped, resource={"service.name": "reviews"}
        )
        await shipper.flush()

        async def exported() -> bool:
            return path.exists() and T in path.read_text()

        await until("the span in the collector's file", exported)
        doc = json.loads(path.read_text().splitlines()[0])
        assert doc["name"] == "GET reviews" and doc["kind"] == "SpanKind.SERVER"
        attrs = doc["attributes"]
        assert attrs["url.path"] == "/r/0" and attrs["http.response.status_code"] == 503
        assert attrs["error.type"] == "503" and attrs["team"] == "bookinfo"

        sink = BusSink(bus, source, dropped("access_log"))
        meta = {"authz_policy": "ns/allow"}
        records = [
            AccessLogRecord(
                1_700_000_000.5 + i, "GET", f"/r/{i}", request_id=f"rid-{i}", trace_id=T, metadata=meta
            )
            for i in range(3)
        ]
        await sink.write_rows([r.row() for r in records])
        got: list[dict[str, object]] = []

        def emit(batch: AccessLogBatch) -> None:
            assert batch.encoding == "json-columns-3" and batch.source.service == "reviews"
            got.extend(records_of(batch))

        async def read() -> bool:
            got.clear()
            await read_stream(bus, None, emit, timeout=0.5)
            return len(got) == 3

        await until("meshctl logs to read the records", read)
        assert [r["request_id"] for r in got] == ["rid-0", "rid-1", "rid-2"]
        assert got[0]["start_time"] == "2023-11-14T22:13:20.500Z" and got[0]["metadata"] == {
            "authz_policy": "ns/allow"
        }
        assert dropped("spans").value == 0 and dropped("access_log").value == 0


async def test_a_seconds_spans_go_in_chunks_with_the_event_loop_running_between_them(
    bus: BusConnection,
) -> None:
    registry = Registry()
    dropped = InternalMetrics(registry).telemetry_dropped.labels
    spans = SpanRecorder(dropped=dropped("spans"))
    facts = ["GET", "/", "r:80", "1.1", "rid", None, "10.0.0.3", None, "r", 80, 200, "-", None, None, "p1"]
    for i in range(1200):
        spans.end(spans.start("GET r", True, T, f"{i + 1:016x}", "", None, 1, None), False, 2, facts)
    got: asyncio.Queue[SpanBatch] = asyncio.Queue()

    async def on_spans(msg: Any) -> None:
        got.put_nowait(codec.decode(msg.data, msg.headers, SpanBatch))

    await bus.subscribe(bus.subjects.telemetry("spans", "p1"), on_spans)
    await bus.nc.flush()
    turns = 0

    async def other_work() -> None:  # a request's turn of the event loop, as often as it gets one
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    shipper = TelemetryShipper(bus, Source("p1"), registry, spans, dropped)
    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    await shipper._ship_spans()
    during = turns - before
    task.cancel()
    counts = [(await got.get()).count for _ in range(3)]
    assert counts == [500, 500, 200]
    assert during >= 2  # the loop ran between the chunks, not only after the last


async def test_an_access_log_drain_past_the_bus_payload_limit_reaches_the_stream_whole(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str
) -> None:
    """300 records of 4 KB paths (1.2 MB, over NATS' 1 MB max_payload): cut until each message fits,
    none lost (one message of them was refused by the bus, every record dropped)."""
    registry = Registry()
    dropped = InternalMetrics(registry).telemetry_dropped.labels
    async with replica(nats_server.url, subject_root):
        logger = AccessLogger()
        logger.use_columns(True)
        for i in range(300):
            logger.log(
                AccessLogRecord(1_700_000_000.5 + i, "GET", f"/{i:04d}" + "p" * 4000, request_id=f"rid-{i}")
            )
        await BusSink(bus, Source("p1", "reviews"), dropped("access_log")).write_columns(
            logger.drain_columns()
        )
        got = await _stream_records(bus, 300, "meshctl logs to read every record")
        assert [r["request_id"] for r in got] == [f"rid-{i}" for i in range(300)]
        assert dropped("access_log").value == 0


async def test_a_drain_refused_in_part_counts_only_the_refused_records_lost(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str
) -> None:
    """A drain goes in parts when it passes the bus's max_payload; when a later part is refused (here a
    record bigger than max_payload alone), the parts published before it are on the stream and not
    counted lost (the writer counted the whole drain dropped)."""
    dropped = InternalMetrics(Registry()).telemetry_dropped.labels("access_log")
    async with replica(nats_server.url, subject_root):
        logger = AccessLogger()
        sink = BusSink(bus, Source("p1", "reviews"), dropped)
        writer = AccessLogWriter(logger, sink, dropped=dropped)
        logger.log(AccessLogRecord(1_700_000_000.5, "GET", "/small", request_id="rid-small"))
        logger.log(AccessLogRecord(1_700_000_001.5, "GET", "/" + "p" * (bus.settings.max_payload + 1)))
        assert await writer.flush() == 0  # a sink failed: nothing counted written
        assert dropped.value == 1
        got = await _stream_records(bus, 1, "the small record on the stream")
        assert got[0]["request_id"] == "rid-small"


async def _stream_records(bus: BusConnection, n: int, what: str) -> list[dict[str, object]]:
    """The access-log stream's records, read as meshctl logs reads them, once there are ``n``."""
    got: list[dict[str, object]] = []

    async def read() -> bool:
        got.clear()
        await read_stream(bus, None, lambda batch: got.extend(records_of(batch)), timeout=0.5)
        return len(got) == n

    await until(what, read)
    return got
