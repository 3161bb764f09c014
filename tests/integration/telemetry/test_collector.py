"""meshbus-telemetry against a real nats-server: replicas share the batches and still add up,
a silent proxy is forgotten, spans that do not fit the export queue are counted, and the
access-log stream carries its limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.telemetry import AccessLogBatch, Source, SpanBatch, pack_rows
from meshbus.proxy.filters.spans import ROW
from meshbus.telemetry.collector.gather import gather_stats
from meshbus.telemetry.collector.service import CollectorConfig, TelemetryService
from tests.unit.telemetry.collector.test_store import batch
from tests.unit.telemetry.promtext import parse

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]


@contextlib.asynccontextmanager
async def replica(url: str, root: str, **kw: object) -> AsyncIterator[TelemetryService]:
    bus = BusConnection(BusSettings(url=url, name="replica", root=root))
    await bus.connect()
    svc = TelemetryService(bus, CollectorConfig(host="127.0.0.1", port=0, **kw))  # type: ignore[arg-type]
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        await bus.close()


async def get(port: int, path: str) -> tuple[int, str]:
    """GET on the replica's HTTP port (it serves on this test's event loop: no blocking client)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body.decode()


async def requests_total(svc: TelemetryService) -> float:
    fams = parse((await get(svc.port, "/metrics"))[1])
    fam = fams.get("istio_requests_total")
    return sum(v for _, _, v in fam.samples) if fam else 0.0


async def until(what: str, probe: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_two_replicas_split_the_batches_and_add_up(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str, tmp_path: Path
) -> None:
    async with (
        replica(nats_server.url, subject_root, spans_file=str(tmp_path / "a.jsonl")) as a,
        replica(nats_server.url, subject_root, spans_file=str(tmp_path / "b.jsonl")) as b,
    ):
        total = 0
        for node in ("p1", "p2", "p3", "p4"):
            for seq in range(1, 11):
                await bus.publish(bus.subjects.telemetry("metrics", node), batch(node, seq, seq))
                total += seq

        async def counted() -> bool:
            return await requests_total(a) + await requests_total(b) == total

        await until("every batch counted once", counted)
        assert a.store.batches + b.store.batches == 40
        assert 0 < a.store.batches < 40, "the queue group shares the batches"
        merged = await gather_stats(bus, 60.0, timeout=1.0, expect=2)
        assert merged.replicas == 2 and sum(e.requests for e in merged.edges) == total


async def test_a_vanished_proxy_is_forgotten(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str, tmp_path: Path
) -> None:
    async with replica(nats_server.url, subject_root, grace=0.5, spans_file=str(tmp_path / "s.jsonl")) as svc:
        await bus.publish(bus.subjects.telemetry("metrics", "gone"), batch("gone", 1, 3))

        async def total_is(n: float) -> bool:
            return await requests_total(svc) == n

        await until("the series", lambda: total_is(3))
        await until("the proxy to be forgotten", lambda: total_is(0), 5)
        text = (await get(svc.port, "/metrics"))[1]
        assert "meshbus_telemetry_proxies 0" in text


async def test_spans_go_to_the_file_and_overflow_is_counted(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str, tmp_path: Path
) -> None:
    path = tmp_path / "spans.jsonl"
    async with replica(nats_server.url, subject_root, spans_file=str(path)) as svc:
        # a row as an older proxy sent it (its attributes made), and one with the request's facts
        span = ["4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "", "GET x", 2, 1, 2, {"a": 1}, 0, ""]
        await bus.publish(
            bus.subjects.telemetry("spans", "p1"),
            SpanBatch(Source("p1"), {"service.name": "x.default"}, "", list(ROW[:10]), pack_rows([span]), 1),
        )
        facts = ["GET", "/y?q=1", "y:9080", "1.1", "rid", None, "10.0.0.1", None, "r", 9080, 503, "UF",
                 "10.0.0.7:9080", "outbound|9080||y", "node"]  # fmt: skip
        row = [*span[:3], "GET y", 2, 1, 2, None, 2, "", *facts]
        await bus.publish(
            bus.subjects.telemetry("spans", "p1"),
            SpanBatch(Source("p1"), {"service.name": "x.default"}, "", list(ROW), pack_rows([row]), 1),
        )

        async def in_file() -> bool:
            return path.exists() and '"GET x"' in path.read_text()

        await until("the span in the file", in_file)

        async def made() -> bool:
            return '"GET y"' in path.read_text()

        await until("the span from facts in the file", made)
        line = next(x for x in path.read_text().splitlines() if '"GET y"' in x)
        attrs = json.loads(line)["attributes"]
        assert attrs["url.path"] == "/y" and attrs["http.response.status_code"] == 503
        assert attrs["error.type"] == "503" and attrs["network.peer.port"] == 9080
        # a full export queue drops (and counts) instead of queuing without end
        svc._queue = asyncio.Queue(1)
        svc._queue.put_nowait(SpanBatch(Source("p1")))  # occupies the one place (nobody takes it now)
        await bus.publish(
            bus.subjects.telemetry("spans", "p1"),
            SpanBatch(Source("p1"), {}, "", list(ROW), pack_rows([span, span]), 2),
        )

        async def dropped() -> bool:
            text = (await get(svc.port, "/metrics"))[1]
            return 'meshbus_telemetry_collector_dropped_total{signal="spans"} 2' in text

        await until("the drop counted", dropped)


async def test_access_logs_are_kept_in_a_stream_with_limits(
    nats_server: EmbeddedNats, bus: BusConnection, subject_root: str, tmp_path: Path
) -> None:
    async with replica(
        nats_server.url,
        subject_root,
        logs_max_bytes=1 << 20,
        logs_max_age=3600.0,
        spans_file=str(tmp_path / "s"),
    ) as svc:
        assert svc.stream_ready and (await get(svc.port, "/ready"))[0] == 200
        info = await bus.nc.jetstream().stream_info(bus.subjects.access_log_stream())
        assert info.config.max_bytes == 1 << 20 and info.config.max_age == 3600.0
        await bus.publish(
            bus.subjects.telemetry("logs", "p1"),
            AccessLogBatch(Source("p1", "reviews"), ["response_code"], pack_rows([[200]]), 1),
        )

        async def stored() -> bool:
            info = await bus.nc.jetstream().stream_info(bus.subjects.access_log_stream())
            return info.state.messages == 1

        await until("the batch in the stream", stored)
