"""meshctl logs / top, without a bus: the status filter, the rows -> Istio's JSON keys, the table."""

from __future__ import annotations

import argparse
import io

import pytest
from rich.console import Console

from meshbus.bus.schemas.telemetry import AccessLogBatch, Source, pack_rows
from meshbus.control.cli.telemetry_cmds import records_of, status_filter, tables
from meshbus.proxy.mesh.telemetry_ship import _RECORD_FIELDS
from meshbus.telemetry.accesslog import AccessLogRecord, wire_row

pytestmark = pytest.mark.unit


def test_status_filter() -> None:
    five = status_filter("5xx")
    assert five(503) and not five(404)
    mixed = status_filter("4xx,503")
    assert mixed(404) and mixed(503) and not mixed(500)
    assert status_filter(None)(200)
    with pytest.raises(argparse.ArgumentTypeError, match="bad --status"):
        status_filter("oops")


def test_rows_render_under_istios_json_keys_and_newer_fields_are_ignored() -> None:
    rec = AccessLogRecord(1_700_000_000.25, "GET", "/r", "HTTP/1.1", 503, "UH", None, 0, 19, 12.6,
                          trace_id="4bf92f3577b34da6a3ce929d0e0e4736", direction="outbound",
                          metadata={"authz_policy": "ns/deny"})  # fmt: skip
    batch = AccessLogBatch(
        Source("n"), [*_RECORD_FIELDS, "from_the_future"], pack_rows([[*wire_row(rec.row()), 1]]), 1
    )
    [doc] = records_of(batch)
    assert doc["start_time"] == "2023-11-14T22:13:20.250Z" and doc["duration"] == 13
    assert (doc["response_code"], doc["response_flags"], doc["direction"]) == (503, "UH", "outbound")
    assert doc["metadata"] == {"authz_policy": "ns/deny"}
    assert "from_the_future" not in doc and "duration_ms" not in doc


def test_top_tables() -> None:
    row = {"name": "reviews.default.svc.cluster.local", "namespace": "default", "rps": 4.5, "success_rate": 0.98,
           "p50_ms": 2.5, "p90_ms": 9.0, "p99_ms": 120.0, "mtls_share": 1.0}  # fmt: skip
    out = io.StringIO()
    Console(file=out, width=160).print(tables({"window_s": 10.0, "services": [row], "workloads": []}))
    text = out.getvalue()
    assert "reviews.default.svc.cluster.local" in text and "98.00%" in text and "120ms" in text
    assert "100.00%" in text and "services (last 10s)" in text
