"""meshbus-telemetry's bus wiring: ingest batches, answer stats, keep access logs, export spans.

- ``telemetry.metrics.*`` and ``telemetry.spans.*`` in the queue group ``telemetry``: each proxy
  batch goes to one replica (telemetry/collector/store.py says why the replicas' sums are exact).
- ``telemetry.stats``: every replica answers (scatter-gather) with its edge traffic of a window.
- ``telemetry.logs.*``: not read here at all: a JetStream stream (created here, with size and age
  limits: ``--logs-max-bytes``, ``--logs-max-age``) keeps what proxies publish; ``meshctl logs``
  reads the stream.
- the config bucket's ``MeshConfig`` keys are watched for the ``opentelemetry`` extension providers
  spans are exported to; spans for no named provider go to ``--otlp-endpoint``, else to the
  ``defaultProviders.tracing`` one, else to ``--spans-file`` (JSON lines).

Span export runs in a worker thread behind a bounded queue, the batches that wait exported together
(one request per exporter); when the exporter falls behind, batches are dropped and counted (``meshbus_telemetry_dropped_total{signal="spans"}``), never queued without
end. The replica's own counters are appended to ``/metrics`` under ``meshbus_telemetry_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson
from nats.aio.msg import Msg
from nats.js import api

from meshbus.bus import codec
from meshbus.bus.config.mesh_config import MeshConfigSpec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BadRequestError
from meshbus.bus.kv import BucketConfig, BucketMissingError, KeyValueStore
from meshbus.bus.schemas.config import decode_value
from meshbus.bus.schemas.telemetry import MetricBatch, SpanBatch, StatsReply, StatsRequest, unpack_rows
from meshbus.bus.service import BusService
from meshbus.bus.tasks import cancel_and_wait
from meshbus.telemetry.collector import exporters
from meshbus.telemetry.collector.gather import gather_stats
from meshbus.telemetry.collector.http import HttpServer
from meshbus.telemetry.collector.otlp_rows import Batch, OtlpRowsExporter
from meshbus.telemetry.collector.store import MetricStore
from meshbus.telemetry.collector.views import kiali_graph, top_rows
from meshbus.telemetry.exposition import CONTENT_TYPE, render_prometheus
from meshbus.telemetry.metrics import ISTIO_DEFAULT_BUCKETS, Registry

log = logging.getLogger(__name__)

QUEUE: Final = "telemetry"
DEFAULT_PORT: Final = 15090
DEFAULT_SPANS_FILE: Final = "meshbus-spans.jsonl"
EXPORT_SPANS: Final = 4000  # spans per export request at most (~2 MB of OTLP), when that many wait


@dataclass(frozen=True, slots=True)
class CollectorConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    """``/metrics``, the web view and its API (0: any free port)."""
    grace: float = 30.0
    """Seconds a proxy may stay silent before its series are forgotten."""
    otlp_endpoint: str = ""
    spans_file: str = DEFAULT_SPANS_FILE
    logs_max_bytes: int = 256 * 1024 * 1024
    logs_max_age: float = 24 * 3600.0
    span_queue: int = 256
    """Span batches waiting for the exporter before new ones are dropped."""
    stats_timeout: float = 0.5
    """How long the web view waits for the other replicas' stats."""


class _Counters:
    def __init__(self) -> None:
        self.registry = Registry()
        r = self.registry
        self.batches = r.counter(
            "meshbus_telemetry_batches_total", "Batches received from proxies, by signal", ("signal",)
        )
        self.bad = r.counter(
            "meshbus_telemetry_bad_batches_total", "Batches that did not decode, by signal", ("signal",)
        )
        self.dropped = r.counter(
            "meshbus_telemetry_collector_dropped_total",
            "Items dropped by this replica (export queue full, export failed), by signal",
            ("signal",),
        )
        self.exported = r.counter(
            "meshbus_telemetry_spans_exported_total", "Spans handed to an exporter successfully"
        )
        self.proxies = r.gauge("meshbus_telemetry_proxies", "Proxies heard from within the grace period")
        self.missed = r.gauge(
            "meshbus_telemetry_batches_missed",
            "Metric batches numbered by proxies that this replica did not see (another replica's, or lost)",
        )
        self.series = r.gauge("meshbus_telemetry_series", "Merged series this replica serves")


class TelemetryService:
    def __init__(self, bus: BusConnection, config: CollectorConfig) -> None:
        self.bus = bus
        self.config = config
        self.store = MetricStore(grace=config.grace)
        self.counters = _Counters()
        self.providers: dict[str, Any] = {}
        """MeshConfig opentelemetry providers by name (from the config bucket)."""
        self.default_provider = ""
        self.stream_ready = False
        self._exporters: dict[str, Any] = {}
        self._queue: asyncio.Queue[SpanBatch] = asyncio.Queue(config.span_queue)
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.base = BusService(bus, "telemetry", description="meshbus telemetry: metrics, spans, access logs")
        self.http = HttpServer(
            {
                "/metrics": self._metrics,
                "/api/graph": self._graph,
                "/api/top": self._top,
                "/healthz": self._healthz,
                "/ready": self._ready,
            }
        )

    @property
    def port(self) -> int:
        return self.http.port

    async def start(self) -> None:
        subj = self.bus.subjects
        await self.base.start()
        self._subs.append(
            await self.bus.subscribe(subj.telemetry_all("metrics"), self._on_metrics, queue=QUEUE)
        )
        self._subs.append(await self.bus.subscribe(subj.telemetry_all("spans"), self._on_spans, queue=QUEUE))
        self._subs.append(await self.bus.subscribe(subj.telemetry_stats(), self._on_stats))
        await self.bus.flush()
        await self.http.start(self.config.host, self.config.port)
        self._tasks.append(asyncio.create_task(self._expire_loop(), name="telemetry-expire"))
        self._tasks.append(asyncio.create_task(self._export_loop(), name="telemetry-export"))
        self._tasks.append(asyncio.create_task(self._watch_mesh_config(), name="telemetry-meshconfig"))
        await self._ensure_stream()
        self.base.details["port"] = str(self.port)
        self.base.set_ready()
        log.info("meshbus-telemetry serving /metrics on %s:%d", self.config.host, self.port)

    async def stop(self) -> None:
        await self.http.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        await cancel_and_wait(self._tasks, logger=log)
        self._tasks.clear()
        await self.base.stop()

    async def __aenter__(self) -> TelemetryService:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- access logs: the stream ------------------------------------------------------------------
    async def _ensure_stream(self) -> None:
        subj = self.bus.subjects
        js = self.bus.nc.jetstream()
        config = api.StreamConfig(
            name=subj.access_log_stream(),
            subjects=[subj.telemetry_all("logs")],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_bytes=self.config.logs_max_bytes,
            max_age=self.config.logs_max_age,
            description="meshbus access logs (AccessLogBatch rows per proxy batch)",
        )
        try:
            try:
                await js.stream_info(config.name or "")
            except Exception:
                await js.add_stream(config)
                log.info(
                    "created access-log stream %s (max %d bytes, %.0fs)",
                    config.name,
                    config.max_bytes,
                    config.max_age,
                )
            else:
                await js.update_stream(config)
            self.stream_ready = True
        except Exception as exc:  # no JetStream: metrics and spans still work; say why logs do not
            log.error("access-log stream %s unavailable: %s", config.name, exc)

    # -- ingest ------------------------------------------------------------------------------------
    async def _on_metrics(self, msg: Msg) -> None:
        try:
            batch = codec.decode(msg.data, msg.headers, MetricBatch, max_bytes=self.bus.settings.max_payload)
        except Exception as exc:
            self.counters.bad.labels("metrics").inc()
            log.debug("undecodable metric batch on %s: %s", msg.subject, exc)
            return
        self.counters.batches.labels("metrics").inc()
        self.store.ingest(batch, time.monotonic())

    async def _on_spans(self, msg: Msg) -> None:
        try:
            batch = codec.decode(msg.data, msg.headers, SpanBatch, max_bytes=self.bus.settings.max_payload)
        except Exception:
            self.counters.bad.labels("spans").inc()
            return
        self.counters.batches.labels("spans").inc()
        try:
            self._queue.put_nowait(batch)
        except asyncio.QueueFull:
            self.counters.dropped.labels("spans").inc(batch.count)

    async def _on_stats(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            req = codec.decode(msg.data, msg.headers, StatsRequest)
        except Exception:
            return
        data, headers = codec.encode(self.stats(req.window_s))
        with contextlib.suppress(Exception):
            await self.bus.nc.publish(msg.reply, data, headers=headers)

    def stats(self, window: float) -> StatsReply:
        return StatsReply(
            replica=self.base.instance_id,
            window_s=window,
            buckets=list(ISTIO_DEFAULT_BUCKETS),
            edges=self.store.window.edges(window, time.monotonic()),
            proxies=self.store.live_proxies(),
        )

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            gone = self.store.expire(time.monotonic())
            if gone:
                log.info("forgot %d silent proxies: %s", len(gone), ", ".join(sorted(gone)))

    # -- spans -------------------------------------------------------------------------------------
    async def _export_loop(self) -> None:
        """Export what has queued: the batches waiting (up to ``EXPORT_SPANS`` spans) go together, one
        request per exporter (a request's fixed cost, ~1 ms in the HTTP client, is shared; proxies
        ship every second, so their batches arrive together)."""
        while True:
            waiting = [await self._queue.get()]
            count = waiting[0].count
            while count < EXPORT_SPANS and not self._queue.empty():
                waiting.append(self._queue.get_nowait())
                count += waiting[-1].count
            groups: dict[int, tuple[Any, list[SpanBatch]]] = {}
            for batch in waiting:
                exporter = self._exporter_for(batch.provider)
                groups.setdefault(id(exporter), (exporter, []))[1].append(batch)
            for exporter, batches in groups.values():
                try:
                    sent, lost = await asyncio.to_thread(_export, exporter, batches)
                except Exception as exc:
                    sent, lost = 0, sum(b.count for b in batches)
                    log.warning("span export to %s failed: %s", exporters.describe(exporter), exc)
                if sent:
                    self.counters.exported.inc(sent)
                if lost:
                    self.counters.dropped.labels("spans").inc(lost)

    def _exporter_for(self, provider: str) -> Any:
        name = provider or ("" if self.config.otlp_endpoint else self.default_provider)
        spec = self.providers.get(name) if name else None
        if spec is not None:
            port = f":{spec.port}"
            path = spec.http.path if spec.http is not None else "/v1/traces"
            key = f"http://{spec.service}{port}{path}"
            headers = dict(spec.http.headers) if spec.http is not None else {}
        elif self.config.otlp_endpoint:
            key, headers = self.config.otlp_endpoint, {}
        else:
            key, headers = "", {}
        exporter = self._exporters.get(key)
        if exporter is None:
            exporter = (
                exporters.otlp_exporter(key, headers)
                if key
                else exporters.JsonLinesExporter(self.config.spans_file)
            )
            self._exporters[key] = exporter
            log.info(
                "spans%s go to %s",
                f" of provider {name}" if spec is not None else "",
                exporters.describe(exporter),
            )
        return exporter

    async def _watch_mesh_config(self) -> None:
        kv = KeyValueStore(self.bus, BucketConfig(self.bus.subjects.kv_bucket("config")), create=False)
        while True:
            try:
                async for entry in kv.watch("MeshConfig.>"):
                    if entry is None:
                        continue
                    self._mesh_config(entry.value if not entry.deleted else None)
            except BucketMissingError:
                pass  # meshbus-config has not made it yet
            except Exception as exc:
                log.debug("MeshConfig watch ended: %r", exc)
            await asyncio.sleep(2.0)

    def _mesh_config(self, value: bytes | None) -> None:
        if value is None:
            self.providers, self.default_provider = {}, ""
            return
        try:
            spec = MeshConfigSpec.model_validate(decode_value(value).spec, by_alias=True, by_name=False)
        except Exception as exc:
            log.error("ignoring a MeshConfig that does not validate: %s", exc)
            return
        self.providers = {
            p.name: p.opentelemetry for p in spec.extension_providers if p.opentelemetry is not None
        }
        dp = spec.default_providers
        self.default_provider = dp.tracing[0] if dp is not None and dp.tracing else ""
        self._exporters.clear()
        log.info(
            "MeshConfig: opentelemetry providers %s (default %r)",
            sorted(self.providers),
            self.default_provider,
        )

    # -- HTTP --------------------------------------------------------------------------------------
    def _own_metrics(self) -> list[str]:
        c = self.counters
        c.proxies.set(self.store.live_proxies())
        c.missed.set(self.store.missed)
        c.series.set(sum(len(f.series) for f in self.store.families.values()))
        return render_prometheus(c.registry).splitlines()

    async def _metrics(self, _q: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE, self.store.render(self._own_metrics()).encode()

    async def _gathered(self, q: dict[str, list[str]]) -> Any:
        window = _window(q)
        return await gather_stats(self.bus, window, timeout=self.config.stats_timeout)

    async def _graph(self, q: dict[str, list[str]]) -> tuple[int, str, bytes]:
        graph = kiali_graph(await self._gathered(q))
        graph["timestamp"] = int(time.time())
        return 200, "application/json", orjson.dumps(graph)

    async def _top(self, q: dict[str, list[str]]) -> tuple[int, str, bytes]:
        m = await self._gathered(q)
        return (
            200,
            "application/json",
            orjson.dumps({"window_s": m.window_s, "replicas": m.replicas, **top_rows(m)}),
        )

    async def _healthz(self, _q: dict[str, list[str]]) -> tuple[int, str, bytes]:
        return 200, "text/plain", b"ok\n"

    async def _ready(self, _q: dict[str, list[str]]) -> tuple[int, str, bytes]:
        ok = self.bus.connected and self.stream_ready
        return (200 if ok else 503), "text/plain", b"ready\n" if ok else b"not ready\n"


def _window(q: dict[str, list[str]]) -> float:
    try:
        return min(max(float(q.get("window", ["10"])[0]), 1.0), 300.0)
    except ValueError:
        return 10.0


def _export(exporter: Any, batches: list[SpanBatch]) -> tuple[int, int]:
    """In a worker thread: decode and export ``batches`` in one go; (spans exported, spans lost)."""
    decoded: list[Batch] = []
    lost = 0
    for batch in batches:
        try:
            rows = unpack_rows(batch.spans, batch.encoding, batch.doubles)
        except BadRequestError as exc:  # one proxy's bad batch does not cost the others theirs
            log.warning("undecodable span batch from %s: %s", batch.source.node, exc)
            lost += batch.count
            continue
        decoded.append((batch.fields, rows, exporters.resource_of(batch.resource)))
    count = sum(len(rows) for _, rows, _ in decoded)
    if not decoded:
        return 0, lost
    if isinstance(exporter, OtlpRowsExporter):  # OTLP is encoded from the rows (no SDK spans)
        ok = exporter.export_rows(decoded)
    else:
        spans = [
            s for fields, rows, resource in decoded for s in exporters.readable_spans(fields, rows, resource)
        ]
        ok = exporter.export(spans).name == "SUCCESS"
    return (count, lost) if ok else (0, lost + count)
