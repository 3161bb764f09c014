"""Mesh mode: ship the proxy's telemetry to meshbus-telemetry, off the request path (asyncio).

Every ``interval`` seconds (1 s) one task publishes, on the proxy's own subjects:
- ``telemetry.metrics.<node>``: the deltas of its metric series since the last batch
  (`meshbus.telemetry.delta`), an empty batch when nothing changed (the collector's liveness signal);
- ``telemetry.spans.<node>``: the spans that ended meanwhile (rows of proxy/filters/spans.py's buffer,
  packed as columns as access logs are: `span_batch`).
Access-log records take the access-log writer's path (it drains the bounded record queue every 200
ms; kept as columns as requests end while the bus is their only sink); `BusSink` publishes them as
columns (`access_log_messages`, `access_log_batch`: a value the batch repeats is packed once) on ``telemetry.logs.<node>``, which a JetStream stream keeps (meshbus-telemetry creates it, with size
and age limits); ``meshctl logs`` renders them under Istio's JSON keys.

Nothing here blocks a request: publishing only buffers in the NATS client. While NATS is away a
publish fails: metric deltas stay uncommitted and go with the next batch; spans and log lines are
dropped and counted in ``meshbus_telemetry_dropped_total{signal}`` (the queues before them are
bounded too). A batch larger than the bus's message limit is split.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import orjson

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.schemas.telemetry import (
    ROWS_JSON_COLUMNS_3,
    AccessLogBatch,
    FamilyDelta,
    MetricBatch,
    Source,
    SpanBatch,
    encode_columns,
    encode_rows,
)
from meshbus.bus.tasks import cancel_and_wait
from meshbus.proxy.filters.spans import ROW
from meshbus.telemetry import loop_stalls
from meshbus.telemetry.accesslog import FIELDS, AccessLogRow, wire_columns, wire_columns_of, wire_row
from meshbus.telemetry.accesslog_writer import PartlyWritten
from meshbus.telemetry.delta import DeltaTracker
from meshbus.telemetry.logcolumns import LogColumns
from meshbus.telemetry.rowcolumns import columns, float_columns

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S: Final = 1.0
_SPAN_FIELDS: Final = list(ROW)
_RECORD_FIELDS: Final = list(FIELDS)
RECORDS_PER_BATCH: Final = 500  # ~100 KiB of rows: well under the bus's message limit
_SPANS_PER_BATCH: Final = 500  # ~300 KiB of rows: under the limit, so a batch is seldom split
_SPLIT_AT: Final = 0.8  # of the bus's max payload: leaves room for headers


def _halves(items: list[Any]) -> list[list[Any]]:
    mid = len(items) // 2
    return [items[:mid], items[mid:]]


class TelemetryShipper:
    """Owns the periodic task; ``dropped(signal)`` is the server's drop counter for a signal."""

    def __init__(
        self,
        bus: BusConnection,
        source: Source,
        registry: Any,
        span_buffer: Any,
        dropped: Callable[[str], Any],
        *,
        resource: dict[str, str] | None = None,
        provider: Callable[[], str] = lambda: "",
        interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.bus = bus
        self.source = source
        self.tracker = DeltaTracker(registry)
        self.span_buffer = span_buffer
        self.dropped = dropped
        self.resource = resource or {}
        self.provider = provider
        self.interval = interval
        self.seq = 0
        self.batches = 0
        self._encoder = codec.Encoder()  # its buffer kept between batches (on the event loop only)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name="meshbus-telemetry-ship"))

    async def stop(self) -> None:
        """Stop, after one last batch when the bus is there (a draining proxy's final counts)."""
        await cancel_and_wait(self._tasks, logger=log)
        self._tasks.clear()
        if self.bus.connected:
            with contextlib.suppress(Exception):
                await self.flush()
                await self.bus.flush(1.0)

    async def _run(self) -> None:
        await self.bus.wait_connected()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # a bug here must not stop telemetry for good
                log.exception("telemetry shipping failed")

    async def flush(self) -> None:
        await self._ship_metrics()
        await self._ship_spans()

    async def _ship_metrics(self) -> None:
        with loop_stalls.mark("telemetry-metrics"):
            families, baseline = self.tracker.collect()
        self.seq += 1
        subject = self.bus.subjects.telemetry("metrics", self.source.node)
        try:
            for data, headers, _n in self._fit(
                [families], lambda fs: MetricBatch(self.source, self.seq, fs), _split_families
            ):
                await self.bus.nc.publish(subject, data, headers=headers)
        except Exception as exc:  # not connected, or the client's buffer is full: try again next time
            log.debug("metric batch not sent (%s); it goes with the next one", exc)
            return
        self.tracker.commit(baseline)
        self.batches += 1

    async def _ship_spans(self) -> None:
        if self.span_buffer is None:
            return
        data = self.span_buffer.drain()
        if not data:
            return
        provider = self.provider()
        subject = self.bus.subjects.telemetry("spans", self.source.node)
        sent = 0
        try:
            for i in range(0, len(data), _SPANS_PER_BATCH):
                if i:
                    # a second's spans at thousands of requests/s: ~0.15 ms of encoding a chunk, not
                    # ~1.2 ms at once, between two turns of the requests' event loop
                    await asyncio.sleep(0)
                with loop_stalls.mark("telemetry-spans"):
                    batches = self._fit(
                        [data[i : i + _SPANS_PER_BATCH]],
                        lambda ds: span_batch(self.source, self.resource, provider, ds),
                        _halves,
                    )
                for body, headers, n in batches:
                    await self.bus.nc.publish(subject, body, headers=headers)
                    sent += n
        except Exception as exc:
            self.dropped("spans").value += len(data) - sent
            log.warning("dropped %d spans: %s", len(data) - sent, exc)

    def _fit(
        self,
        chunks: list[list[Any]],
        make: Callable[[list[Any]], Any],
        split: Callable[[list[Any]], list[list[Any]]],
    ) -> list[tuple[bytes, dict[str, str], int]]:
        """``chunks`` encoded, each as (payload, headers, items), split further until each message
        fits the bus's payload limit. Each message is encoded once (a span batch every second is
        the bulk of a sidecar's shipping work; encoding it to measure it and again to send doubled it)."""
        limit = self.bus.settings.max_payload * _SPLIT_AT
        out: list[tuple[bytes, dict[str, str], int]] = []
        todo = list(reversed(chunks))
        while todo:
            chunk = todo.pop()
            data, headers = self._encoder.encode(make(chunk))
            if len(data) <= limit or len(chunk) <= 1:
                out.append((data, headers, len(chunk)))
            else:
                todo.extend(reversed(split(chunk)))
        return out


def _split_families(families: list[FamilyDelta]) -> list[list[FamilyDelta]]:
    if len(families) > 1:
        return _halves(families)
    f = families[0]
    return [[FamilyDelta(f.name, f.kind, f.help, f.labels, f.buckets, part)] for part in _halves(f.samples)]


def span_batch(
    source: Source, resource: dict[str, str], provider: str, rows: list[tuple[Any, ...]]
) -> SpanBatch:
    """``rows`` as one batch, packed as columns as access logs are (`ROWS_JSON_COLUMNS_3`): a batch's
    spans share name, kind, method, authority, route, node, ... and as rows orjson wrote them again for
    every span: as columns a sampled request costs each sidecar ~1,650 instructions less (of ~4,300 for
    shipping its span; bench/telemetry_cost.py --callgrind, on-100). Rows JSON cannot carry go as rows."""
    n = len(rows)
    data, encoding, doubles = _packed(lambda: columns(rows), n, lambda: rows)
    return SpanBatch(source, resource, provider, _SPAN_FIELDS, data, n, encoding, doubles)


def access_log_batch(source: Source, rows: list[AccessLogRow]) -> AccessLogBatch:
    """``rows`` as one batch, packed as columns (`ROWS_JSON_COLUMNS_3`: the values a batch repeats, most of
    them, written once, times and durations as doubles); rows JSON cannot carry (a filter's metadata
    with a non-str key) as rows."""
    return _batch_of(source, wire_columns(rows), len(rows), lambda: rows)


def access_log_columns_batch(source: Source, batch: LogColumns) -> AccessLogBatch:
    """The logger's ``batch`` of records (telemetry/logcolumns.py, or a `LogColumns.part` of it) as
    one batch, packed as `access_log_batch` packs rows, without making the rows."""
    return _batch_of(source, wire_columns_of(batch), batch.n, batch.rows)


def access_log_messages(
    encoder: codec.Encoder, source: Source, batch: LogColumns, max_payload: int
) -> list[tuple[bytes, dict[str, str], int]]:
    """The logger's ``batch`` as encoded AccessLogBatch messages (payload, headers, records), cut in
    halves (`LogColumns.part`) until each fits the bus's ``max_payload`` (or holds one record): whole,
    as it mostly is (a record costs ~100 bytes as columns; a sidecar at 4,000 requests a second drains
    800 every 0.2 s). Cut by count (500 records), 500 records of 2 KB paths passed the limit and the
    bus refused the message: every record in it lost. Cut by size, only the rare drain that does not
    fit is encoded twice."""
    limit = max_payload * _SPLIT_AT
    out: list[tuple[bytes, dict[str, str], int]] = []
    todo = [batch]
    while todo:
        part = todo.pop()
        data, headers = encoder.encode(access_log_columns_batch(source, part))
        if len(data) <= limit or part.n <= 1:
            out.append((data, headers, part.n))
        else:
            mid = part.n // 2
            todo.append(part.part(mid, part.n))
            todo.append(part.part(0, mid))
    return out


def _batch_of(
    source: Source, cols: list[list[Any]], n: int, rows: Callable[[], list[AccessLogRow]]
) -> AccessLogBatch:
    data, encoding, doubles = _packed(lambda: cols, n, lambda: [wire_row(r) for r in rows()])
    return AccessLogBatch(source, _RECORD_FIELDS, data, n, encoding, doubles)


def _packed(cols: Callable[[], list[Any]], n: int, rows: Callable[[], list[Any]]) -> tuple[bytes, str, bytes]:
    """A batch's ``n`` records as columns (`ROWS_JSON_COLUMNS_3`, and its doubles), or as rows
    (`encode_rows`, no doubles) when columns cannot carry them: rows of other widths (a ValueError of
    `columns`), or a value JSON cannot carry (a map with a non-str key)."""
    try:
        packed, doubles = float_columns(cols())
        return encode_columns(packed, n), ROWS_JSON_COLUMNS_3, doubles
    except (ValueError, orjson.JSONEncodeError):
        data, encoding = encode_rows(rows())
        return data, encoding, b""


class BusSink:
    """An access-log sink (telemetry/accesslog_writer.py) that publishes the rows the proxy queued, as
    they are (no copy, no record object in between)."""

    def __init__(self, bus: BusConnection, source: Source, dropped: Any) -> None:
        self.bus = bus
        self.source = source
        self.dropped = dropped
        self._encoder = codec.Encoder()

    async def write_rows(self, rows: list[AccessLogRow]) -> None:
        if not rows:
            return
        if not self.bus.connected:
            raise ConnectionError("meshbus: not connected to NATS")
        subject = self.bus.subjects.telemetry("logs", self.source.node)
        for i in range(0, len(rows), RECORDS_PER_BATCH):
            batch = rows[i : i + RECORDS_PER_BATCH] if len(rows) > RECORDS_PER_BATCH else rows
            body, headers = self._encoder.encode(access_log_batch(self.source, batch))
            await self.bus.nc.publish(subject, body, headers=headers)

    async def write_columns(self, batch: LogColumns) -> None:
        if not self.bus.connected:
            raise ConnectionError("meshbus: not connected to NATS")
        if not batch.n:
            return
        subject = self.bus.subjects.telemetry("logs", self.source.node)
        max_payload = self.bus.settings.max_payload
        written = 0
        for body, headers, n in access_log_messages(self._encoder, self.source, batch, max_payload):
            try:
                await self.bus.nc.publish(subject, body, headers=headers)
            except Exception as exc:
                if written:  # the parts before are on the bus: the writer counts only the rest lost
                    raise PartlyWritten(written, exc) from exc
                raise
            written += n

    async def write(self, data: bytes) -> None:
        raise NotImplementedError("BusSink takes rows (write_rows), not formatted lines")

    async def close(self) -> None:
        pass
