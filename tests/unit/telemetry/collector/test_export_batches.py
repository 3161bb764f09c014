"""meshbus-telemetry exports the span batches that wait together (telemetry/collector/service.py
``_export``): one export for all, and a batch it cannot decode costs only its own spans."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from meshbus.bus.schemas.telemetry import ROWS_JSON, Source, SpanBatch, encode_rows
from meshbus.proxy.filters.spans import ROW, SpanRecorder
from meshbus.telemetry.collector.exporters import JsonLinesExporter
from meshbus.telemetry.collector.service import _export

pytestmark = pytest.mark.unit


def _batch(node: str, names: list[str]) -> SpanBatch:
    spans = SpanRecorder()
    facts = ["GET", "/", "r:80", "1.1", "rid", None, "10.0.0.3", None, "r", 80, 200, "-", None, None, node]
    for i, name in enumerate(names):
        span = spans.start(name, True, "4bf92f3577b34da6a3ce929d0e0e4736", f"{i + 1:016x}", "", None, 1, None)
        spans.end(span, False, 2, facts)
    data, encoding = encode_rows(spans.drain())
    return SpanBatch(Source(node), {"service.name": node}, "", list(ROW), data, len(names), encoding)


def test_batches_go_out_in_one_export_and_a_bad_one_loses_only_its_spans(tmp_path: Path) -> None:
    good = [_batch("a", ["a1", "a2"]), _batch("b", ["b1"])]
    bad = SpanBatch(Source("c"), {}, "", list(ROW), b"[[1,", 3, ROWS_JSON)
    exporter = JsonLinesExporter(tmp_path / "spans.jsonl")
    assert _export(exporter, [good[0], bad, good[1]]) == (3, 3)
    lines = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    assert [d["name"] for d in lines] == ["a1", "a2", "b1"]
    assert [d["resource"]["attributes"]["service.name"] for d in lines] == ["a", "a", "b"]


def test_a_failed_export_loses_every_span_it_carried(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    exporter = JsonLinesExporter(tmp_path / "dir")  # a folder: the write fails
    assert _export(exporter, [_batch("a", ["a1", "a2"]), _batch("b", ["b1"])]) == (0, 3)
