"""Span batches ship as columns (proxy/mesh/telemetry_ship.py ``span_batch``, `ROWS_JSON_COLUMNS_3`) and
meshbus-telemetry reads back the very rows the proxy recorded: the same OTLP request and the same
JSON lines as from rows; a batch in an encoding it does not know loses only its own spans."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshbus.bus import codec
from meshbus.bus.schemas.telemetry import (
    ROWS_JSON,
    ROWS_JSON_COLUMNS_3,
    ROWS_MSGPACK,
    Source,
    SpanBatch,
    encode_rows,
    unpack_rows,
)
from meshbus.proxy.filters.spans import ROW
from meshbus.proxy.mesh.telemetry_ship import span_batch
from meshbus.telemetry.collector.exporters import JsonLinesExporter, resource_of
from meshbus.telemetry.collector.otlp_rows import RowEncoder
from meshbus.telemetry.collector.service import _export

pytestmark = pytest.mark.unit

_TEXT = ["GET", "".join(["G", "ET"]), "", "y:9080", None]  # equal strings that are not one object
_NUMBERS = [0, 1, 2, 200, 200.0, True, 9080, 2**63 - 1, -(2**63)]  # equal values of other types
_FLOATS = [0.5, -0.0, 0.0, 5e-324, 2.4999999999999996, 1_700_000_000.9999996]
_TAGS = [None, {}, {"team": "a", "n": 3, "ok": True}, {"team": "a", "n": 3.0, "z": -0.0}, {"x": None}]
_NOT_JSON = {1: "a tag with an int key"}  # the batch goes as msgpack rows

_hex = st.text("0123456789abcdef", min_size=16, max_size=32)
_value = st.one_of(
    st.sampled_from(_TEXT + _NUMBERS + _FLOATS + _TAGS), st.text(max_size=8), st.integers(-(2**63), 2**64 - 1)
)
_row = st.tuples(
    _hex, _hex, st.sampled_from(["", "00f067aa0ba902b7"]), st.sampled_from(["GET y", "GET", "ü"]),
    st.sampled_from([1, 2]), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.sampled_from([*_TAGS, _NOT_JSON]),
    st.sampled_from([0, 2]), st.sampled_from(["", "k=v", "a=1,b=2"]),
    *(_value for _ in range(len(ROW) - 10)),
)  # fmt: skip


def _bits(rows: list[Any]) -> bytes:
    """msgpack keeps each value's type (1, 1.0, True) and each float's 8 bytes (-0.0), at any depth."""
    return msgpack.packb(rows, use_bin_type=True)


def _sent(batch: SpanBatch) -> SpanBatch:
    body, headers = codec.encode(batch)
    return codec.decode(body, headers, SpanBatch)


def _shipped(rows: list[tuple[Any, ...]]) -> SpanBatch:
    return _sent(span_batch(Source("n"), {"service.name": "y"}, "", rows))


@settings(max_examples=200, deadline=None)
@given(st.lists(_row, min_size=1, max_size=12))
def test_span_rows_ship_as_columns_and_read_back_bit_for_bit(rows: list[tuple[Any, ...]]) -> None:
    batch = _shipped(rows)
    assert batch.count == len(rows)
    assert batch.encoding in (ROWS_JSON_COLUMNS_3, ROWS_MSGPACK)  # msgpack: ints JSON cannot carry
    assert _bits(unpack_rows(batch.spans, batch.encoding, batch.doubles)) == _bits(rows)


def _sidecar_spans(n: int) -> list[tuple[Any, ...]]:
    """A sidecar's spans as a batch has them: ids and times change, most facts repeat."""
    facts = ["GET", "/y", "y:9080", "1.1", "rid", "curl", "10.0.0.1", None, "r", 9080, 200, "-", None, None,
             "node"]  # fmt: skip
    rows = []
    for i in range(n):
        tags = {"team": "a"} if i % 3 == 0 else None
        rows.append((f"{i:032x}", f"{i + 1:016x}", "" if i % 2 else f"{i + 7:016x}", "GET y", 1 + i % 2,
                     1_700_000_000_123_456_789 + i, 1_700_000_000_223_456_789 + 3 * i, tags, 2 if i == 4 else 0,
                     "k=v" if i == 5 else "", *facts[:4], f"rid-{i}", *facts[5:]))  # fmt: skip
    return rows


@pytest.mark.parametrize("floats", [False, True])
def test_the_collector_exports_the_same_spans_from_columns_as_from_rows(tmp_path: Path, floats: bool) -> None:
    rows = _sidecar_spans(40)
    if floats:  # a column of varying floats (none today) goes as doubles, which the collector reads
        rows = [(*r[:14], 0.1 * i, *r[15:]) for i, r in enumerate(rows)]
    batch = _shipped(rows)
    assert batch.encoding == ROWS_JSON_COLUMNS_3 and len(batch.doubles) == (8 * 40 if floats else 0)
    data, encoding = encode_rows(rows)
    assert encoding == ROWS_JSON and len(batch.spans) < len(data) * 2 / 3  # repeated values packed once
    as_rows = _sent(SpanBatch(Source("n"), {"service.name": "y"}, "", list(ROW), data, len(rows), encoding))
    resource = resource_of(batch.resource)
    # OTLP: the same request, byte for byte
    encoder = RowEncoder()
    got = encoder.request([(batch.fields, unpack_rows(batch.spans, batch.encoding, batch.doubles), resource)])
    assert got == encoder.request([(as_rows.fields, unpack_rows(as_rows.spans, as_rows.encoding), resource)])
    # the JSON-lines file: the same lines
    assert _export(JsonLinesExporter(tmp_path / "columns.jsonl"), [batch]) == (40, 0)
    assert _export(JsonLinesExporter(tmp_path / "rows.jsonl"), [as_rows]) == (40, 0)
    assert (tmp_path / "columns.jsonl").read_text() == (tmp_path / "rows.jsonl").read_text()


def test_rows_of_other_widths_ship_as_rows_never_cut_to_the_first_ones() -> None:
    rows = _sidecar_spans(3)
    rows[1] = (*rows[1], "a newer field")
    batch = _shipped(rows)
    assert batch.encoding == ROWS_JSON and not batch.doubles
    assert unpack_rows(batch.spans, batch.encoding) == [list(r) for r in rows]


def test_aspan_batch_in_an_unknown_encoding_loses_only_its_spans_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = _shipped(_sidecar_spans(3))
    newer = SpanBatch(Source("c"), {}, "", list(ROW), b"[2]", 2, "json-columns-4")
    with caplog.at_level(logging.WARNING):
        assert _export(JsonLinesExporter(tmp_path / "spans.jsonl"), [newer, good]) == (3, 2)
    assert "unknown row encoding 'json-columns-4'" in caplog.text and "from c" in caplog.text
    assert len((tmp_path / "spans.jsonl").read_text().splitlines()) == 3
