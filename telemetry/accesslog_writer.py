"""Asyncio adapter that drains an :class:`~meshbus.telemetry.accesslog.AccessLogger` off the request path.

Every ``interval`` seconds the writer takes the queued records (rows, telemetry.accesslog.AccessLogRow),
formats them ``chunk`` records at a time, yielding to the event loop whenever a turn has taken ``budget`` (50 us), so neither a large
backlog nor long records stall requests for long, and hands the bytes to each :class:`Sink` (a file,
stdout, the bus: each batch is formatted once per format, whatever the number of sinks).

``per_request=True`` has the logger format each record's line for the first byte sink as its request
ends (``AccessLogger.line``), and the writer only joins them: no formatting slices on the loop, for ~0.6 us
more CPU per request (bench/micro.py --access-log, interleaved). Off by default until a quiet A/B of the
tail (bench/chain_tail.py --format-at both) shows it pays; the bytes are the same either way. File and stream sinks do the blocking ``write`` in a worker
thread. A failed write is logged at WARNING and its records are counted as dropped; the writer keeps
going (STYLE.md E8: background errors go to the logger and a counter).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, Protocol, Self

from meshbus.telemetry import fields, loop_stalls
from meshbus.telemetry.accesslog import (
    LINE_JSON,
    LINE_TEXT,
    AccessLog,
    AccessLogger,
    AccessLogRow,
    format_json_rows,
    format_text_rows,
)
from meshbus.telemetry.errors import ConfigError
from meshbus.telemetry.logcolumns import LogColumns
from meshbus.telemetry.metrics import CounterChild

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S: Final = 0.2
DEFAULT_CHUNK: Final = 8  # records formatted between two reads of the clock (~2 us: JSON, compiled)
# Loop time the writer takes in one turn before it lets requests run: a request that arrives meanwhile
# waits at most about this (fixed 64-record chunks took ~50 us quiet, up to ~0.4 ms on a loaded core,
# and more for long paths or user agents; a time budget bounds the wait whatever the records hold).
DEFAULT_BUDGET_S: Final = 50e-6

_FORMATTERS: Final[dict[str, Callable[[Iterable[AccessLogRow]], bytes]]] = {
    "json": format_json_rows,
    "text": format_text_rows,
}
# the same formats, one record at a time as each request ends (AccessLogger.line): joined, the bytes
# _FORMATTERS give
_LINE_FORMATS: Final = {"json": LINE_JSON, "text": LINE_TEXT}
_JOIN_CHUNK: Final = 1024  # lines joined between yields (a join copies ~0.5 KB a line: ~50 us)


class Sink(Protocol):
    """Where formatted access-log lines go (file, stdout, later the bus)."""

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...


class RowSink(Protocol):
    """A sink that takes the records themselves, as rows (the bus ships rows, not formatted lines)."""

    async def write_rows(self, rows: list[AccessLogRow]) -> None: ...

    async def close(self) -> None: ...


class PartlyWritten(Exception):
    """A sink wrote the first ``written`` records of a batch, then failed (``__cause__``): only the
    rest are lost (a bus sink publishes a large drain in parts, and a later part can be refused)."""

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(f"{cause} (after {written} records were written)")
        self.written = written


class ColumnSink(RowSink, Protocol):
    """A row sink that also takes a batch as the logger's columns (the bus: it ships columns); while
    every sink is one, the logger keeps its records as columns (AccessLogger.use_columns)."""

    async def write_columns(self, batch: LogColumns) -> None: ...


class StreamSink:
    """A binary stream (e.g. ``sys.stdout.buffer``); written and flushed in a worker thread."""

    def __init__(self, stream: IO[bytes], *, close_stream: bool = False) -> None:
        self._stream = stream
        self._close_stream = close_stream

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._stream.flush()

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self._write, data)

    async def close(self) -> None:
        if self._close_stream:
            await asyncio.to_thread(self._stream.close)


class FileSink(StreamSink):
    """Append to a file (opened on construction, closed by ``close``)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(open(path, "ab"), close_stream=True)  # closed in close()


class LoggerSink:
    """Each line to the ``meshbus.access`` logger (written verbatim by ``configure_logging``'s handler).

    Handlers run on the event loop thread; prefer :class:`FileSink`/:class:`StreamSink` at high rates.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger if logger is not None else logging.getLogger(fields.ACCESS_LOGGER)

    async def write(self, data: bytes) -> None:
        info = self._logger.info
        for line in data.decode().splitlines():
            info("%s", line)

    async def close(self) -> None:
        pass


class AccessLogWriter:
    """Background task: ``async with AccessLogWriter(logger, sink): ...`` flushes until exit, then once more."""

    def __init__(
        self,
        access_log: AccessLog,
        sink: Sink | RowSink,
        *,
        fmt: Literal["json", "text"] = "json",
        interval: float = DEFAULT_INTERVAL_S,
        chunk: int = DEFAULT_CHUNK,
        budget: float = DEFAULT_BUDGET_S,
        per_request: bool = False,
        dropped: CounterChild | None = None,
    ) -> None:
        if fmt not in _FORMATTERS:
            raise ConfigError(f"access log format must be one of {sorted(_FORMATTERS)} (got {fmt!r})")
        if interval <= 0 or chunk < 1 or budget <= 0:
            raise ConfigError(
                f"access log interval and budget must be > 0, chunk >= 1 (got {interval}, {budget}, {chunk})"
            )
        self._access_log = access_log
        self._sinks: list[tuple[Sink | RowSink, Callable[[Iterable[AccessLogRow]], bytes]]] = [
            (sink, _FORMATTERS[fmt])
        ]
        # The format the logger may render per request (the first byte sink's: a later sink of the same
        # format shares the lines, one of another format is formatted here from the records). Lines are
        # used when there is one per record (the logger's ``line`` was on for the whole batch).
        self._eager: Callable[[Iterable[AccessLogRow]], bytes] | None = None
        if not hasattr(sink, "write_rows") and isinstance(access_log, AccessLogger):
            self._eager = _FORMATTERS[fmt]
            if per_request:
                access_log.line = _LINE_FORMATS[fmt]
        self._columns = False
        self._use_columns()
        self._interval = interval
        self._chunk = chunk
        self._budget = budget
        self._dropped = dropped if dropped is not None else CounterChild()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.written = 0
        """Records written so far."""

    def add_sink(self, sink: Sink | RowSink, fmt: Literal["json", "text"] = "json") -> None:
        if fmt not in _FORMATTERS:
            raise ConfigError(f"access log format must be one of {sorted(_FORMATTERS)} (got {fmt!r})")
        self._sinks.append((sink, _FORMATTERS[fmt]))
        self._use_columns()

    def _use_columns(self) -> None:
        logger = self._access_log
        if isinstance(logger, AccessLogger):
            self._columns = all(hasattr(sink, "write_columns") for sink, _fmt in self._sinks)
            logger.use_columns(self._columns)

    async def _format(
        self, records: list[AccessLogRow], fmt: Callable[[Iterable[AccessLogRow]], bytes]
    ) -> bytes:
        parts: list[bytes] = []
        step, budget = self._chunk, self._budget
        started = time.perf_counter()
        for i in range(0, len(records), step):
            with loop_stalls.mark("access-log"):
                parts.append(fmt(records[i : i + step]))
            if i + step < len(records) and time.perf_counter() - started >= budget:
                await asyncio.sleep(0)  # let requests run between slices of a batch
                started = time.perf_counter()
        return b"".join(parts)

    async def _join(self, lines: list[bytes]) -> bytes:
        if len(lines) <= _JOIN_CHUNK:
            return b"".join(lines)
        parts: list[bytes] = []
        for i in range(0, len(lines), _JOIN_CHUNK):
            with loop_stalls.mark("access-log"):
                parts.append(b"".join(lines[i : i + _JOIN_CHUNK]))
            await asyncio.sleep(0)
        return b"".join(parts)

    async def flush(self) -> int:
        """Write everything queued now to every sink; returns how many records were written (to all
        sinks; a sink that failed counts its records as dropped)."""
        if self._columns:
            return await self._flush_columns()
        records = self._access_log.drain()
        lines = self._access_log.drain_lines()  # with the records, before any await: the same requests
        if not records:
            return 0
        formatted: dict[Callable[[Iterable[AccessLogRow]], bytes], bytes] = {}
        if self._eager is not None and len(lines) == len(records):  # unequal: line on or off mid-batch
            formatted[self._eager] = await self._join(lines)
        ok = True
        for sink, fmt in self._sinks:
            try:
                if hasattr(sink, "write_rows"):
                    await sink.write_rows(records)
                    continue
                data = formatted.get(fmt)
                if data is None:
                    data = formatted[fmt] = await self._format(records, fmt)
                await sink.write(data)
            except Exception as exc:  # any sink failure: count and keep the writer alive
                ok = False
                self._failed(len(records), exc)
        if not ok:
            return 0
        self.written += len(records)
        return len(records)

    async def _flush_columns(self) -> int:
        logger = self._access_log
        if not isinstance(logger, AccessLogger) or not logger.pending:  # nothing new: no batch made
            return 0
        batch = logger.drain_columns()
        ok = True
        for sink, _fmt in self._sinks:
            try:
                await sink.write_columns(batch)  # type: ignore[union-attr]  # all ColumnSink (_use_columns)
            except Exception as exc:
                ok = False
                self._failed(batch.n - (exc.written if isinstance(exc, PartlyWritten) else 0), exc)
        if not ok:
            return 0
        self.written += batch.n
        return batch.n

    def _failed(self, n: int, exc: Exception) -> None:
        self._dropped.value += n
        log.warning(
            "access log write failed, dropped %d records: %s",
            n,
            exc,
            extra={fields.ERROR_CODE: type(exc).__name__},
        )

    async def _run(self) -> None:
        # Stopping is a signal, not a cancel: a cancel could land between drain() and write() and lose
        # the batch in hand. The loop finishes its current flush, flushes once more, and returns.
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            await self.flush()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="meshbus-access-log")

    async def stop(self) -> None:
        """Stop the periodic task, write what is left, close the sink."""
        task, self._task = self._task, None
        self._stopping.set()
        if task is not None:
            await task
        await self.flush()
        for sink, _fmt in self._sinks:
            await sink.close()

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
