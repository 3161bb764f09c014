"""One proxy worker's lifecycle: load config, listen, watch and swap config, sweep timers, drain.

The active ``ProxyRuntime`` is one attribute; a swap replaces it. Each request reads it once when it
begins and keeps that object to the end, so in-flight requests finish on the config they started
with and no lock is needed (one event loop per worker). An invalid config is refused with every
error (file, resource, field) logged at ERROR, and the previous runtime keeps serving.

Periodic work runs in one sweep task (``tick`` seconds): the coarse ``clock`` that header/idle
timeouts read, outlier-detection un-ejection (``Cluster.tick``), idle upstream connection expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from meshbus.bus.process import quiet_gc, release_free_heap
from meshbus.bus.tasks import cancel_and_wait
from meshbus.proxy.adapters.listener import DownstreamConnection, ListenerContext, LiveState
from meshbus.proxy.adapters.upstream import PoolManager
from meshbus.proxy.bootstrap import BootstrapConfig, ConfigRefused, load_in_process, load_isolated
from meshbus.proxy.build.runtime import ProxyRuntime, RuntimeBuildError, build_runtime
from meshbus.proxy.filters.authz_providers import CLIENT_FACTORIES
from meshbus.proxy.filters.observe import Observability
from meshbus.proxy.filters.plugins.bindings import PluginRuntime
from meshbus.proxy.tls.mtls import MeshTls, MeshTlsStats, TlsOrigin
from meshbus.telemetry import loop_stalls
from meshbus.telemetry.accesslog import NULL_ACCESS_LOG, AccessLog, AccessLogger
from meshbus.telemetry.accesslog_writer import AccessLogWriter, FileSink, RowSink, Sink, StreamSink
from meshbus.telemetry.metrics import InternalMetrics, IstioMetrics, Registry

log = logging.getLogger(__name__)

YAML_SUFFIXES = (".yaml", ".yml")

AUTHZ_CLIENTS = {
    "envoyExtAuthzHttp": "meshbus.proxy.adapters.ext_authz_http",
    "meshbusAuthz": "meshbus.proxy.adapters.ext_authz_nats",
}
"""CUSTOM provider type -> the module that registers its client (filters/authz_providers.py), imported
when a runtime with such a provider goes live: a worker without one does not load them (the NATS
client pulls the bus message schemas)."""


SWEEP_SLICE = 512  # downstream connections checked per loop turn (~35 us compiled: ~70 ns each, idle)


async def check_timeouts(
    connections: list[Any], now: float, header_timeout: float, idle_timeout: float
) -> None:
    """Each connection's header and idle timeouts, ``SWEEP_SLICE`` connections per loop turn: a gateway
    holding thousands of keep-alive connections would otherwise stall its requests for milliseconds
    four times a second. A connection that closes meanwhile returns at once (``closed``)."""
    for i in range(0, len(connections), SWEEP_SLICE):
        if i:
            await asyncio.sleep(0)
        with loop_stalls.mark("sweep"):
            for c in connections[i : i + SWEEP_SLICE]:
                c.check_timeouts(now, header_timeout, idle_timeout)


def _config_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in YAML_SUFFIXES)
    return [path] if path.exists() else []


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p in _config_files(path):
        with contextlib.suppress(OSError):
            st = p.stat()
            out.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(out)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in _config_files(path):
        with contextlib.suppress(OSError):
            h.update(p.read_bytes())
    return h.hexdigest()[:12]


class ProxyServer:
    def __init__(self, config: BootstrapConfig, *, worker: int = 0) -> None:
        self.config = config
        self.worker = worker
        self.loop = asyncio.get_running_loop()
        # the live runtime (set by start(); ``runtime`` below), whether it drains, the sweep's clock
        self.live = LiveState(clock=self.loop.time())
        self.pools = PoolManager(self.loop)
        self.tls_stats = MeshTlsStats()
        self.pools.origin = TlsOrigin(self, self.tls_stats)  # DestinationRule TLS; mesh mTLS once enabled
        self.mesh_tls: MeshTls | None = None
        self.registry = Registry()
        self.metrics = IstioMetrics(self.registry)
        self.internal = InternalMetrics(self.registry)
        self.observe = Observability(self.metrics, self.internal, config.namespace, config.labels)
        self._log_sinks: list[Sink] = []
        self._writer: AccessLogWriter | None = None
        self.connections: set[DownstreamConnection] = set()
        self.started = time.time()
        self.healthcheck_failed = False
        self.ports: dict[str, int] = {}
        self.reloads = {"applied": 0, "refused": 0}
        self.last_error = ""
        self._servers: list[asyncio.Server] = []
        self._contexts: list[ListenerContext] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._fingerprint: tuple[tuple[str, int, int], ...] = ()
        self._stopped = asyncio.Event()
        self._reloading = False
        self._reload_tasks: set[asyncio.Task[None]] = set()
        # Mesh mode: a non-empty reason keeps /ready at 503 (no snapshot or certificate yet), and
        # drain hooks run first on shutdown (the agent deregisters before connections drain).
        self.not_ready = ""
        self.drain_hooks: list[Callable[[], Awaitable[None]]] = []
        # Mesh mode sets this (MeshMode.cert_report -> ProxyCertsReply) for the admin's /certs.
        self.cert_report: Callable[[], Any] | None = None
        # Mesh mode sets this (MeshMode.info: snapshot signatures) for the admin's /server_info.
        self.mesh_info: Callable[[], dict[str, Any]] | None = None
        # Plugins (proxy/filters/plugins): instances per worker; REMOTE ones call their hosts over
        # `bus` (mesh mode: the agent's connection; standalone: one made when a REMOTE Plugin appears).
        self.bus: Any = None
        self._own_bus = False
        self.plugins = PluginRuntime(registry=self.registry, bus=self._plugin_bus)
        self.plugins.on_stale = self._plugins_described
        self.mesh_rebuild: Callable[[], None] | None = None  # mesh mode: build the applied snapshot again

    @property
    def runtime(self) -> ProxyRuntime:
        """The live runtime; a swap replaces it (each request keeps the one it began with)."""
        return self.live.runtime

    @runtime.setter
    def runtime(self, value: ProxyRuntime) -> None:
        self.live.runtime = value

    # ---- config ---------------------------------------------------------------------------------

    async def load(self) -> ProxyRuntime:
        """Load and build the config on disk; raises ConfigRefused or RuntimeBuildError."""
        if not self.config.config_path:  # mesh mode: routes arrive as snapshots (MeshAgent -> apply)
            cfg = self.config
            return build_runtime(
                [],
                namespace=cfg.namespace,
                labels=cfg.labels,
                app_port=cfg.app_port,
                version="0",
                plugins=self.plugins,
            )
        path = Path(self.config.config_path)
        fingerprint = _fingerprint(path)
        if self.config.isolate_loader:
            resources, warnings = await load_isolated(str(path))
        else:
            resources, warnings = load_in_process(str(path))
        for w in warnings:
            log.warning("config: %s", w)
        await self.plugins.prepare(
            resources, namespace=self.config.namespace, labels=self.config.labels or {}
        )
        runtime = build_runtime(
            resources,
            namespace=self.config.namespace,
            labels=self.config.labels,
            app_port=self.config.app_port,
            version=_digest(path),
            previous=self.runtime,
            plugins=self.plugins,
        )
        if runtime.memo is not None:
            # Every reload parses the files afresh, so the next build can reuse nothing the memo
            # finds by identity; kept whole, it would keep this build's parsed resources alive.
            runtime = dataclasses.replace(runtime, memo=runtime.memo.without_inputs())
        self._fingerprint = fingerprint
        return runtime

    def call_bus(self) -> Any:
        """The bus the request path calls over (REMOTE Plugins, the meshbusAuthz authorizer)."""
        return self._plugin_bus()

    def _plugin_bus(self) -> Any:
        """The bus REMOTE Plugins are called over; a standalone proxy connects on first need."""
        if self.bus is None:
            from meshbus.bus.connection import BusConnection, BusSettings, default_url

            cfg = self.config
            self.bus = BusConnection(
                BusSettings(
                    url=cfg.nats or default_url(), name="meshbus-proxy plugins", root=cfg.subject_root
                )
            )
            self._own_bus = True
            self._tasks.append(
                self.loop.create_task(self.bus.connect(wait=True), name="meshbus-proxy-plugin-bus")
            )
        return self.bus

    def _plugins_described(self) -> None:
        """A REMOTE filter's host described it after the build: build again, with only its hooks."""
        if self.config.config_path:
            self.request_reload()
        elif self.mesh_rebuild is not None:
            self.mesh_rebuild()

    def _swapped(self, runtime: ProxyRuntime) -> None:
        """A runtime went live: Plugins it no longer runs are closed, the client of its CUSTOM
        authorization provider's type is registered."""
        memo = runtime.memo
        self.plugins.activate(memo.plugins if memo is not None else None)
        kind = runtime.authz_provider_kind()
        if kind in AUTHZ_CLIENTS and kind not in CLIENT_FACTORIES:
            # here, before a request can run on it: the filter looks the client up per request
            importlib.import_module(AUTHZ_CLIENTS[kind])

    @staticmethod
    def _settle() -> None:
        """After a runtime went live (off the request path): what the build left is frozen out of the
        cyclic GC's sight, and the heap it freed given back."""
        quiet_gc()
        release_free_heap()

    def apply(self, runtime: ProxyRuntime) -> None:
        """Swap in a runtime built elsewhere (e.g. from a pushed snapshot); in-flight requests keep theirs."""
        old = self.runtime.version if self.runtime is not None else None
        self.runtime = runtime
        self._swapped(runtime)
        self._settle()
        log.info("applied config version %s (was %s)", runtime.version, old)

    def request_reload(self) -> None:
        """SIGHUP: reload soon (loading may await a child process)."""
        task = self.loop.create_task(self._reload_logged())
        self._reload_tasks.add(task)  # keep a reference until done (the loop holds only weak ones)
        task.add_done_callback(self._reload_tasks.discard)

    async def _reload_logged(self) -> None:
        try:
            await self.reload()
        except Exception:
            log.exception("reload failed")

    async def reload(self) -> bool:
        """Swap in the config on disk if it is valid; otherwise log why and keep the current one."""
        if self._reloading:
            return False
        self._reloading = True
        try:
            return await self._reload()
        finally:
            self._reloading = False

    async def _reload(self) -> bool:
        if not self.config.config_path:
            self.last_error = "mesh mode: config comes from meshbus-discovery, not a file"
            return False
        try:
            runtime = await self.load()
        except (ConfigRefused, RuntimeBuildError) as exc:
            self._fingerprint = _fingerprint(Path(self.config.config_path))  # do not retry until it changes
            self.reloads["refused"] += 1
            self.last_error = str(exc)
            log.error("config refused, keeping version %s:\n%s", self.runtime.version, exc)
            return False
        old = self.runtime.version
        self.runtime = runtime
        self._swapped(runtime)
        self._settle()
        self.reloads["applied"] += 1
        self.last_error = ""
        log.info("applied config version %s (was %s)", runtime.version, old)
        return True

    # ---- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.runtime = await self.load()
        self._swapped(self.runtime)
        if cfg.config_path:
            log.info("loaded config version %s from %s", self.runtime.version, cfg.config_path)
        else:  # mesh mode: nothing was loaded; routes come with discovery's first snapshot
            log.info("mesh mode: no routes until the first snapshot from discovery")
        quiet_gc()
        if cfg.access_log:
            sink = StreamSink(sys.stdout.buffer) if cfg.access_log == "-" else FileSink(cfg.access_log)
            self.add_access_log_sink(sink, "text" if cfg.access_log_format == "text" else "json")
        for name, addr in (("outbound", cfg.outbound), ("inbound", cfg.inbound)):
            if addr is None:
                continue
            ctx = ListenerContext(self, name)
            self._contexts.append(ctx)
            srv = await self.loop.create_server(
                (lambda ctx=ctx: self._inbound_protocol(ctx))
                if name == "inbound"
                else (lambda ctx=ctx: DownstreamConnection(ctx)),
                addr.host,
                addr.port,
                reuse_port=cfg.reuse_port or None,
                backlog=1024,
            )
            self._servers.append(srv)
            self.ports[name] = srv.sockets[0].getsockname()[1]
        if cfg.admin is not None and self.worker == 0:
            from meshbus.proxy.adapters.admin import AdminServer

            admin = AdminServer(self)
            srv = await admin.listen(cfg.admin.host, cfg.admin.port)
            self._servers.append(srv)
            self.ports["admin"] = srv.sockets[0].getsockname()[1]
        self._tasks.append(self.loop.create_task(self._sweep(), name="meshbus-proxy-sweep"))
        if cfg.config_path:
            self._tasks.append(self.loop.create_task(self._watch(), name="meshbus-proxy-watch"))
        log.info("proxy worker %d listening: %s", self.worker, self.ports)
        release_free_heap()  # what loading and listening freed (see _settle)

    @property
    def access_log(self) -> AccessLog:
        """Where the request path logs (held by ``observe``, whose listeners read it natively, where a
        read of this attribute by name cost ~240 instructions a request)."""
        return self.observe.access_log

    @access_log.setter
    def access_log(self, value: AccessLog) -> None:
        self.observe.access_log = value

    @property
    def logging_on(self) -> bool:
        """Whether access-log records are kept (when not, the request path does not even make them)."""
        return self.access_log is not NULL_ACCESS_LOG

    def add_access_log_sink(self, sink: Sink | RowSink, fmt: str = "json") -> None:
        """Start keeping access-log records (once), and write them to ``sink`` too (mesh mode adds
        the bus). One writer formats each batch once per format, off the request path."""
        if self._writer is None:
            self.access_log = AccessLogger(dropped=self.internal.telemetry_dropped.labels("access_log"))
            self._writer = AccessLogWriter(
                self.access_log, sink, fmt="text" if fmt == "text" else "json",
                dropped=self.internal.telemetry_dropped.labels("access_log"),
            )  # fmt: skip
            self._writer.start()
        else:
            self._writer.add_sink(sink, "text" if fmt == "text" else "json")

    def enable_mesh_tls(self, cert_client: Any, *, labels: Mapping[str, str] | None = None) -> MeshTls:
        """Mesh mode, after the first certificate: mTLS to mesh endpoints, PeerAuthentication inbound.

        ``cert_client`` is a `meshbus.proxy.mesh.identity.CertClient` (``.current`` is read per new
        connection, so renewals apply to new connections only). ``labels`` are this workload's
        labels, for PeerAuthentication selectors.
        """
        self.mesh_tls = MeshTls(self, cert_client, self.pools.origin, labels=labels)
        self.observe.set_principal(str(cert_client.current.spiffe_id))
        log.info("mesh mTLS enabled as %s", cert_client.current.spiffe_id)
        return self.mesh_tls

    def _inbound_protocol(self, ctx: ListenerContext) -> asyncio.Protocol:
        mesh = self.mesh_tls
        if mesh is None:
            return DownstreamConnection(ctx)
        return mesh.inbound_protocol(ctx, DownstreamConnection)

    async def _sweep(self) -> None:
        cfg = self.config
        tick = min(0.25, cfg.header_timeout / 4)
        last_pool_sweep = 0.0
        while True:
            await asyncio.sleep(tick)
            now = self.live.clock = self.loop.time()
            try:
                await check_timeouts(list(self.connections), now, cfg.header_timeout, cfg.idle_timeout)
                with loop_stalls.mark("sweep"):
                    mono = time.monotonic()
                    clusters = self.runtime.clusters
                    for cluster in clusters.values():
                        cluster.tick(mono)
                    if now - last_pool_sweep >= 1.0:
                        last_pool_sweep = now
                        self.pools.sweep(mono, clusters)
            except Exception:  # a sweep bug must not stop timeouts forever: log and go on
                log.exception("sweep failed")

    async def _watch(self) -> None:
        path = Path(self.config.config_path)
        while True:
            await asyncio.sleep(self.config.reload_interval)
            try:
                with loop_stalls.mark("config-watch"):
                    changed = _fingerprint(path) != self._fingerprint
                if changed:
                    await self.reload()
            except Exception:
                log.exception("config watch failed")

    def request_shutdown(self) -> None:
        self._stopped.set()

    async def serve_until_stopped(self) -> None:
        """Run until SIGTERM/SIGINT (or request_shutdown), reloading on SIGHUP; then drain."""
        loop = self.loop
        handled = []
        for sig, cb in ((signal.SIGTERM, self.request_shutdown), (signal.SIGINT, self.request_shutdown),
                        (signal.SIGHUP, self.request_reload)):  # fmt: skip
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, cb)
                handled.append(sig)
        stalls = loop_stalls.from_env()  # a diagnostic, off unless MESHBUS_LOOP_STALLS names a file
        try:
            await self._stopped.wait()
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            if stalls is not None:
                loop_stalls.dump(stalls)
            await self.shutdown(self.config.drain_timeout)

    async def shutdown(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish within ``grace``, then close everything."""
        self.live.draining = True
        for hook in self.drain_hooks:
            try:
                await asyncio.wait_for(hook(), 2.0)
            except Exception:  # a failed hook must not stop the drain
                log.exception("drain hook failed")
        for srv in self._servers:
            srv.close()
        for c in list(self.connections):
            c.shutdown()
        deadline = self.loop.time() + grace
        while any(c.current is not None for c in self.connections) and self.loop.time() < deadline:  # noqa: ASYNC110 - polling is fine here
            await asyncio.sleep(0.05)
        left = [c for c in self.connections if not c.closed or c.current is not None]
        if left:
            log.warning("drain grace over: closing %d connections with requests in flight", len(left))
        for c in list(self.connections):
            c.transport.abort()
        await cancel_and_wait(self._tasks, logger=log)
        self._tasks.clear()
        self.pools.close_all()
        self.plugins.close()
        if self._own_bus and self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.close(drain=False)
        if self.mesh_tls is not None:
            self.mesh_tls.close()
        for ctx in self._contexts:
            ctx.deadlines.close()
        for srv in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(srv.wait_closed(), 1.0)
        self._servers.clear()
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks
        log.info("proxy worker %d stopped", self.worker)

    def state(self) -> str:
        if self.live.draining:
            return "DRAINING"
        if self.runtime is None:
            return "PRE_INITIALIZING"
        if self.not_ready:
            return self.not_ready
        return "LIVE"

    def server_info(self) -> dict[str, Any]:
        return {
            "version": "meshbus-proxy/0.1.0",
            "state": self.state(),
            "config_version": self.runtime.version if self.runtime is not None else None,
            "uptime_current_epoch": f"{int(time.time() - self.started)}s",
            "worker": self.worker,
            "listeners": self.ports,
            "active_connections": len(self.connections),
            "reloads": dict(self.reloads),
            "last_config_error": self.last_error,
            **({"mesh": self.mesh_info()} if self.mesh_info is not None else {}),
            "command_line_options": {
                f: str(getattr(self.config, f)) for f in self.config.__dataclass_fields__
            },
        }
