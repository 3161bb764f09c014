"""A proxy's STATS phase on real sockets: trace headers upstream, spans, labels, access-log filters.

The proxy runs in this process from YAML (a Telemetry resource sets sampling, metric overrides and
the access-log filter); upstreams record the heads they receive.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.telemetry.accesslog import AccessLogRecord
from meshbus.telemetry.exposition import render_prometheus
from meshbus.telemetry.peer import PEER_HEADER, Workload
from meshbus.telemetry.spanattrs import http_attributes
from tests.integration.proxy.conftest import ProxyFactory, ProxyHandle, service_entry, yaml
from tests.integration.proxy.upstreams import HeadServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
T = "4bf92f3577b34da6a3ce929d0e0e4736"
S = "00f067aa0ba902b7"


def telemetry(spec: str) -> str:
    return yaml(f"""
        apiVersion: telemetry.istio.io/v1
        kind: Telemetry
        metadata: {{name: t, namespace: istio-system}}
        spec:
        {spec}
        """)


async def get(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    return answer


def fields(head: bytes) -> dict[str, str]:
    lines = head.decode("latin-1").split("\r\n")[1:-2]
    return {n.lower(): v for n, _, v in (line.partition(": ") for line in lines)}


class Capture:
    def __init__(self) -> None:
        self.records: list[AccessLogRecord] = []

    def log(self, record: AccessLogRecord) -> None:
        self.records.append(record)

    def drain(self) -> list[AccessLogRecord]:
        return []


async def start(proxy: ProxyFactory, upstream: HeadServer, extra: str = "") -> ProxyHandle:
    return await proxy(service_entry("reviews", [upstream]) + extra)  # type: ignore[list-item]


async def test_a_request_without_context_gets_one_and_a_callers_unsampled_one_passes_untouched(
    proxy: ProxyFactory,
) -> None:
    u = await HeadServer(lambda _h: OK).start()
    try:
        p = await start(proxy, u, telemetry("  tracing: [{randomSamplingPercentage: 0}]"))
        await get(p.port, b"GET /a HTTP/1.1\r\nHost: reviews\r\n\r\n")
        await get(p.port, f"GET /b HTTP/1.1\r\nHost: reviews\r\ntraceparent: 00-{T}-{S}-00\r\n\r\n".encode())
        first, second = (fields(h) for h in u.heads)
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", first["traceparent"])  # the decision goes on
        assert second["traceparent"] == f"00-{T}-{S}-00"  # not ours to record: as it came
    finally:
        await u.stop()


async def test_a_sampled_hop_records_a_span_and_sends_its_id_in_the_callers_format(
    proxy: ProxyFactory,
) -> None:
    u = await HeadServer(lambda _h: OK).start()
    try:
        p = await start(proxy, u, telemetry("  tracing: [{randomSamplingPercentage: 0}]"))
        buffer = SpanRecorder()
        p.server.observe.set_identity(Workload.of("productpage", "default", {"app": "productpage"}), "productpage",
                                      "productpage.default.svc.cluster.local", buffer)  # fmt: skip
        # B3 multi, sampled by the caller: the 0% sampling of this side does not matter
        head = f"GET /r HTTP/1.1\r\nHost: reviews\r\nx-b3-traceid: {T}\r\nx-b3-spanid: {S}\r\nx-b3-sampled: 1\r\n"
        await get(p.port, head.encode() + b"x-request-id: rid-1\r\n\r\n")
        sent = fields(u.heads[0])
        [row] = buffer.drain()
        span = dict(zip(ROW, row, strict=True))
        mine = span["span_id"]
        assert span["trace_id"] == T and span["parent_span_id"] == S and len(mine) == 16
        assert sent["x-b3-traceid"] == T and sent["x-b3-spanid"] == mine and sent["x-b3-parentspanid"] == S
        assert sent["traceparent"] == f"00-{T}-{mine}-01" and sent["x-request-id"] == "rid-1"
        assert span["kind"] == 2 and span["name"] == "GET reviews.default.svc.cluster.local"  # CLIENT
        assert span["end_ns"] >= span["start_ns"] > 0 and span["status_code"] == 0
        attrs = http_attributes(span)  # what meshbus-telemetry makes of the row
        assert attrs["http.request.method"] == "GET" and attrs["url.path"] == "/r"
        assert attrs["http.response.status_code"] == 200 and attrs["server.address"] == "reviews"
        assert attrs["meshbus.request_id"] == "rid-1" and "error.type" not in attrs
    finally:
        await u.stop()


async def test_span_names_and_node_follow_the_method_and_the_proxys_identity(proxy: ProxyFactory) -> None:
    """The tracer keeps its last span name and its node: a new method, or a new identity, is seen."""
    u = await HeadServer(lambda _h: OK).start()
    try:
        p = await start(proxy, u, telemetry("  tracing: [{randomSamplingPercentage: 100}]"))
        buffer = SpanRecorder()
        observe = p.server.observe
        for name in ("productpage", "ratings"):
            observe.set_identity(Workload.of(name, "default", {"app": name}), name, f"{name}.default.svc.cluster.local", buffer)  # fmt: skip
            for method in ("GET", "GET", "POST", "PURGE"):
                await get(
                    p.port, f"{method} /r HTTP/1.1\r\nHost: reviews\r\ncontent-length: 0\r\n\r\n".encode()
                )
        spans = [dict(zip(ROW, row, strict=True)) for row in buffer.drain()]
        names = [s["name"].split()[0] for s in spans]
        assert names == ["GET", "GET", "POST", "HTTP"] * 2  # an unknown method is named HTTP
        assert {s["name"].split()[1] for s in spans} == {"reviews.default.svc.cluster.local"}
        assert [s["node_id"] for s in spans] == ["productpage"] * 4 + ["ratings"] * 4
    finally:
        await u.stop()


async def test_a_reloaded_telemetry_resource_changes_sampling_and_custom_tags(proxy: ProxyFactory) -> None:
    """The tracer keeps the last settings' fields: a new policy (a reload) is seen on the next request."""
    u = await HeadServer(lambda _h: OK).start()
    try:
        extra = telemetry("  tracing: [{randomSamplingPercentage: 0}]")
        p = await start(proxy, u, extra)
        buffer = SpanRecorder()
        p.server.observe.set_identity(Workload.of("productpage", "default", {}), "productpage",
                                      "productpage.default.svc.cluster.local", buffer)  # fmt: skip
        request = b"GET /r HTTP/1.1\r\nHost: reviews\r\nx-tag: blue\r\n\r\n"
        await get(p.port, request)
        assert buffer.drain() == []  # 0%: no span
        tags = "customTags: {team: {literal: {value: bookinfo}}, colour: {header: {name: x-tag}}}"
        p.write_config(
            service_entry("reviews", [u])
            + telemetry(f"  tracing: [{{randomSamplingPercentage: 100, {tags}}}]")
        )  # type: ignore[list-item]
        assert await p.server.reload()
        await get(p.port, request)
        [row] = buffer.drain()
        assert dict(zip(ROW, row, strict=True))["attributes"] == {"team": "bookinfo", "colour": "blue"}
        p.write_config(
            service_entry("reviews", [u]) + telemetry("  tracing: [{randomSamplingPercentage: 100}]")
        )  # type: ignore[list-item]
        assert await p.server.reload()
        await get(p.port, request)
        [row] = buffer.drain()
        assert dict(zip(ROW, row, strict=True))["attributes"] is None
    finally:
        await u.stop()


async def test_the_inbound_side_reads_and_removes_the_peer_header(proxy: ProxyFactory) -> None:
    u = await HeadServer(lambda _h: OK).start()
    try:
        p = await proxy(service_entry("reviews", [u]), app_port=u.port)  # type: ignore[list-item]
        p.server.observe.set_identity(
            Workload.of("reviews", "default", {"app": "reviews", "version": "v1"}),
            "reviews",
            "reviews.default.svc.cluster.local",
        )
        caller = Workload.of("productpage", "default", {"app": "productpage", "version": "v1"}, "productpage")
        head = f"GET /x HTTP/1.1\r\nHost: reviews\r\n{PEER_HEADER}: {caller.header_value()}\r\n\r\n"
        await get(p.inbound_port, head.encode())
        assert PEER_HEADER not in fields(u.heads[0])  # the app never sees it
        text = render_prometheus(p.server.registry)
        line = next(x for x in text.splitlines() if x.startswith("istio_requests_total{"))
        for want in ('reporter="destination"', 'source_workload="productpage-v1"', 'source_app="productpage"',
                     'destination_workload="reviews-v1"', 'destination_service="reviews.default.svc.cluster.local"',
                     'connection_security_policy="none"', 'source_principal="unknown"'):  # fmt: skip
            assert want in line, line
    finally:
        await u.stop()


async def test_telemetry_overrides_and_the_access_log_filter(proxy: ProxyFactory) -> None:
    u = await HeadServer(
        lambda h: OK if b"/ok" in h else b"HTTP/1.1 503 x\r\nContent-Length: 0\r\n\r\n"
    ).start()
    try:
        spec = """  metrics:
          - overrides:
            - match: {metric: REQUEST_COUNT, mode: CLIENT}
              tagOverrides:
                request_protocol: {operation: REMOVE}
                method: {value: request.method}
                team: {value: "'payments'"}
            - match: {metric: REQUEST_SIZE}
              disabled: true
          accessLogging:
          - filter: {expression: "response.code >= 500"}"""
        p = await start(proxy, u, telemetry(spec))
        log = Capture()
        p.server.access_log = log  # type: ignore[assignment]
        await get(p.port, b"GET /ok HTTP/1.1\r\nHost: reviews\r\n\r\n")
        await get(p.port, b"POST /bad HTTP/1.1\r\nHost: reviews\r\ncontent-length: 0\r\n\r\n")
        assert [(r.path, r.response_code) for r in log.records] == [("/bad", 503)]
        assert log.records[0].trace_id and log.records[0].direction == "outbound"
        text = render_prometheus(p.server.registry)
        counts = [x for x in text.splitlines() if x.startswith("istio_requests_total{")]
        assert len(counts) == 2 and all(
            'team="payments"' in x and "request_protocol" not in x for x in counts
        )
        assert {re.search(r'method="(\w+)"', x).group(1) for x in counts} == {"GET", "POST"}  # type: ignore[union-attr]
        assert "istio_request_bytes_bucket{" not in text  # disabled
        assert "istio_request_duration_milliseconds_bucket{" in text and 'request_protocol="http"' in text
    finally:
        await u.stop()
