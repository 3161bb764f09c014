"""The proxy queues each request's access-log record as a row (a tuple of 19 items, its 24 fields by
wire_row, no record object): what the bus ships and what the file formats write from it must be what the record made.

A real proxy on real sockets, its access log kept by the server's own writer: one sink takes the
rows (as the bus sink does), two take the JSON and text lines.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from meshbus.bus.schemas.telemetry import encode_rows
from meshbus.telemetry.accesslog import (
    FIELDS,
    TAIL,
    AccessLogRecord,
    AccessLogRow,
    format_json_line,
    format_text_line,
    to_json_dict,
    wire_row,
)
from tests.integration.proxy.test_telemetry_hops import OK, S, T, get, start, telemetry
from tests.integration.proxy.upstreams import HeadServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Rows:
    def __init__(self) -> None:
        self.rows: list[AccessLogRow] = []
        self.got = asyncio.Event()

    async def write_rows(self, rows: list[AccessLogRow]) -> None:
        self.rows += rows
        self.got.set()

    async def close(self) -> None:
        pass


class Lines:
    def __init__(self) -> None:
        self.data = b""
        self.got = asyncio.Event()

    async def write(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    async def close(self) -> None:
        pass


async def test_a_row_the_proxy_queues_ships_and_formats_as_its_record_did(proxy) -> None:  # type: ignore[no-untyped-def]
    u = await HeadServer(lambda _h: OK).start()
    try:
        p = await start(proxy, u, telemetry("  tracing: [{randomSamplingPercentage: 100}]"))
        rows, json_lines, text_lines = Rows(), Lines(), Lines()
        p.server.add_access_log_sink(rows)
        p.server.add_access_log_sink(json_lines)
        p.server.add_access_log_sink(text_lines, "text")
        head = (
            f'GET /r/1?q=%C3%BC HTTP/1.1\r\nHost: reviews\r\nuser-agent: t"q\r\nx-request-id: rid-1\r\n'
            f"traceparent: 00-{T}-{S}-01\r\n\r\n"
        )
        await get(p.port, head.encode())
        await asyncio.wait_for(
            asyncio.gather(rows.got.wait(), json_lines.got.wait(), text_lines.got.wait()), 5
        )

        [row] = rows.rows
        assert type(row) is tuple and len(row) == 19 and len(wire_row(row)) == len(FIELDS)
        record = AccessLogRecord.from_row(row)
        assert (record.method, record.path, record.response_code, record.request_id) == (
            "GET", "/r/1?q=%C3%BC", 200, "rid-1",
        )  # fmt: skip
        assert record.trace_id == T and record.direction == "outbound" and record.user_agent == 't"q'
        assert record.authority == "reviews" and record.upstream_host == f"127.0.0.1:{u.port}"
        assert (record.upstream_cluster or "").startswith("outbound|") and record.response_flags == "-"
        # the values keep the record's types: the same bytes on the bus as the record's row made
        assert type(record.start_time) is float and type(record.duration_ms) is float
        assert encode_rows([row]) == encode_rows([record.row()])
        # the writer's lines from the row: byte for byte the record's (and Istio's JSON object)
        assert json_lines.data == format_json_line(record) == orjson.dumps(to_json_dict(record)) + b"\n"
        assert text_lines.data == (format_text_line(record) + "\n").encode()
        # the next request of the route shares the row's tail (its cluster, route, direction): one tuple
        rows.got.clear()
        await get(p.port, head.replace("rid-1", "rid-2").encode())
        await asyncio.wait_for(rows.got.wait(), 5)
        assert (
            rows.rows[-1][TAIL] is row[TAIL] and AccessLogRecord.from_row(rows.rows[-1]).request_id == "rid-2"
        )
    finally:
        await u.stop()


async def test_logged_headers_are_the_heads_final_ones_with_duplicates_joined(proxy) -> None:  # type: ignore[no-untyped-def]
    # the row reads user-agent, x-forwarded-for and x-request-id at log time, as Envoy's %REQ()% does:
    # repeated headers joined with "," (as the head's hdict has them), the id the proxy generated
    u = await HeadServer(lambda _h: OK).start()
    try:
        p = await start(proxy, u, telemetry("  accessLogging: [{}]"))
        rows = Rows()
        p.server.add_access_log_sink(rows)
        head = (
            "GET /r HTTP/1.1\r\nHost: reviews\r\nUser-Agent: a\r\nx-forwarded-for: 10.0.0.1\r\n"
            "user-agent: b c\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nx-other-header-12: z\r\n\r\n"
        )
        await get(p.port, head.encode())
        await asyncio.wait_for(rows.got.wait(), 5)
        [row] = rows.rows
        record = AccessLogRecord.from_row(row)
        assert record.user_agent == "a,b c" and record.x_forwarded_for == "10.0.0.1,10.0.0.2, 10.0.0.3"
        [sent] = u.heads
        forwarded = [
            line for line in sent.decode("latin-1").split("\r\n") if line.startswith("x-request-id: ")
        ]
        assert record.request_id and forwarded == [f"x-request-id: {record.request_id}"]
    finally:
        await u.stop()
