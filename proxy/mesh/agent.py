"""The proxy's agent in mesh mode: register, heartbeat, receive snapshots, swap, ACK/NACK (asyncio).

At start the agent subscribes to its own snapshot subject, registers, heartbeats every second (the
heartbeat carries the workload, the version it runs and its app's health; a health change is sent
at once, not at the next beat) and fetches its snapshot; if the control
plane (or NATS) does not answer in time, it applies the last good snapshot saved on disk and keeps
trying in the background. Every snapshot from the bus passes `SnapshotTrust.check` (its signature)
first; a refused one is NACKed and never offered to the applier. `ready` is set by the first applied snapshot, so an app waiting for the
proxy's ``/ready`` never sees it without routes. After a reconnect it fetches again (pushes may have
been missed); on drain it deregisters at once. What to do with each snapshot is decided without
I/O by `meshbus.proxy.mesh.snapshot_apply.SnapshotApplier`.

The swap itself belongs to the proxy server: the agent calls ``swap(runtime)`` and the server
replaces its one runtime reference (requests in flight finish on the old one). The owner of the
`BusConnection` connects it (in the background when NATS may be away); the agent waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.aio.msg import Msg

from meshbus.bus import codec
from meshbus.bus.config.fates import ProxyReport
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError, SignatureError
from meshbus.bus.rpc import request
from meshbus.bus.schemas.discovery import (
    APP_NOT_PROBED,
    Deregister,
    FetchRequest,
    Heartbeat,
    ProxyConfigReply,
    ProxyConfigRequest,
    Register,
    RegisterReply,
    Snapshot,
    SnapshotAck,
)
from meshbus.bus.service import MESHBUS_VERSION
from meshbus.bus.tasks import cancel_and_wait
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.mesh.agent_args import add_agent_args, parse_labels
from meshbus.proxy.mesh.snapshot_apply import (
    Applied,
    BuildFn,
    ResourceCache,
    SnapshotApplier,
    load_state,
    one_line,
    save_state,
)
from meshbus.proxy.mesh.snapshot_trust import SnapshotTrust
from meshbus.proxy.mesh.state_dir import SNAPSHOT_FILE

__all__ = [
    "AgentSettings",
    "MeshAgent",
    "ResourceCache",
    "SnapshotApplier",
    "SwapCallback",
    "add_agent_args",
    "agent_settings_from_args",
    "load_state",
    "new_node_id",
    "parse_labels",
    "save_state",
]

log = logging.getLogger(__name__)

SwapCallback = Callable[[ProxyRuntime], None]
"""Installs a runtime in the proxy server (``ProxyServer.apply``); must not raise."""


def new_node_id(service: str, labels: Mapping[str, str]) -> str:
    """``reviews-v1-3f9a2c``: readable in proxy-status, unique, a valid subject token."""
    base = "-".join(p for p in (service, labels.get("version", "")) if p)
    base = re.sub(r"[^A-Za-z0-9-]+", "-", base).strip("-") or "proxy"
    return f"{base}-{uuid.uuid4().hex[:6]}"


# -- the bus side ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentSettings:
    service: str
    namespace: str = "default"
    service_account: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    node_id: str = ""
    """Default: ``<service>-<version label>-<random>``."""
    address: str = "127.0.0.1"
    """Address peers reach this proxy's inbound listener at."""
    ports: Mapping[str, int] = field(default_factory=dict)
    """Service ports by name; default ``{"http": app_port}``."""
    inbound_port: int = 0
    app_port: int | None = None
    heartbeat_interval: float = 1.0
    fetch_timeout: float = 2.0
    retry_max: float = 2.0
    state_file: str | None = None
    """Where the last good snapshot is kept (None: not kept)."""

    def __post_init__(self) -> None:
        if not self.service:
            raise ValueError("meshbus: mesh mode needs --service")
        if self.heartbeat_interval <= 0 or self.fetch_timeout <= 0:
            raise ValueError("meshbus: heartbeat interval and fetch timeout must be positive")

    def workload(self) -> Register:
        node = self.node_id or new_node_id(self.service, self.labels)
        ports = dict(self.ports) or ({"http": self.app_port} if self.app_port else {})
        return Register(
            node_id=node,
            service=self.service,
            namespace=self.namespace,
            service_account=self.service_account,
            labels=dict(self.labels),
            address=self.address,
            ports=ports,
            inbound_port=self.inbound_port,
            proxy_version=MESHBUS_VERSION,
        )


class MeshAgent:
    def __init__(
        self,
        bus: BusConnection,
        settings: AgentSettings,
        swap: SwapCallback,
        *,
        build: BuildFn = build_runtime,
        cache: ResourceCache | None = None,
        logger: logging.Logger | None = None,
        trust: SnapshotTrust | None = None,
    ) -> None:
        self.bus = bus
        self.trust = trust or SnapshotTrust()
        """Checks each snapshot's signature before it is offered to the applier."""
        self.settings = settings
        self.workload = settings.workload()
        self.node_id = self.workload.node_id
        self.swap = swap
        self.applier = SnapshotApplier(
            self.node_id,
            settings.namespace,
            settings.app_port,
            build,
            cache or ResourceCache(),
            labels=settings.labels,
        )
        self.ready = asyncio.Event()
        self._log = logger or log
        self._fates = ProxyReport()  # what this proxy does not enforce: logged once per resource content
        self._subs: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._resync = asyncio.Event()
        self._beat_now = asyncio.Event()
        self.app_health = APP_NOT_PROBED
        self.app_health_detail = ""
        self._seq = 0
        self._draining = False
        self.acks_sent = 0

    @property
    def applied(self) -> Applied | None:
        return self.applier.applied

    @property
    def runtime(self) -> ProxyRuntime | None:
        return self.applier.runtime

    # -- lifecycle
    async def start(self) -> None:
        """Return once a snapshot is applied, or the control plane did not answer within the fetch
        timeout (then the last good one from disk is applied, if there is one)."""
        self._tasks.append(asyncio.create_task(self._run(), name=f"meshbus-agent-{self.node_id}"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), self.settings.fetch_timeout)
        if not self.ready.is_set():
            self._load_from_disk()

    async def _run(self) -> None:
        await self.bus.wait_connected()  # the owner connects (in the background if NATS is away)
        subj = self.bus.subjects
        self._subs.append(await self.bus.subscribe(subj.xds_snapshot(self.node_id), self._on_snapshot))
        self._subs.append(await self.bus.subscribe(subj.xds_config_dump(self.node_id), self._on_config_dump))
        self._tasks.append(
            asyncio.create_task(self._heartbeat_loop(), name=f"meshbus-agent-hb-{self.node_id}")
        )
        with contextlib.suppress(BusError):
            reply = await request(
                self.bus,
                subj.xds_register(self.node_id),
                self.workload,
                RegisterReply,
                timeout=self.settings.fetch_timeout,
            )
            self._log.info("registered %s with discovery replica %s", self.node_id, reply.replica)
        self._resync.set()
        await self._sync_loop()

    async def _sync_loop(self) -> None:
        delay = 0.1
        while True:
            await self._resync.wait()
            try:
                await self.fetch()
            except BusError as exc:
                self._log.debug("fetch failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
                continue
            delay = 0.1
            self._resync.clear()

    async def fetch(self) -> None:
        cur = self.applier.applied
        req = FetchRequest(self.workload, cur.version if cur else 0, cur.digest if cur else "")
        snap = await request(
            self.bus,
            self.bus.subjects.xds_fetch(self.node_id),
            req,
            Snapshot,
            timeout=self.settings.fetch_timeout,
            verify=self.trust.check,
        )
        await self.handle(snap)

    def _load_from_disk(self) -> None:
        if not self.settings.state_file or self.applier.applied is not None:
            return
        snap = load_state(self.settings.state_file)
        if snap is None:
            return
        out = self.applier.offer(snap, now=time.time())
        if out.runtime is not None:
            self.swap(out.runtime)
            self.ready.set()
            self._log_fates()
            self._log.warning(
                "control plane unreachable: serving last good snapshot v%d from %s",
                snap.version,
                self.settings.state_file,
            )
        else:
            self._log.error(
                "saved snapshot %s does not apply: %s", self.settings.state_file, self.applier.last_error
            )

    async def drain(self) -> None:
        """Leave every endpoint set now (call when the proxy starts draining)."""
        if self._draining:
            return
        self._draining = True
        with contextlib.suppress(Exception):
            await self.bus.publish(self.bus.subjects.xds_deregister(self.node_id), Deregister(self.node_id))
            await self.bus.flush(timeout=1.0)

    async def stop(self, *, deregister: bool = True) -> None:
        if deregister and self.bus.connected:
            await self.drain()
        await cancel_and_wait(self._tasks, logger=self._log)
        self._tasks.clear()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()

    # -- snapshots
    async def _on_snapshot(self, msg: Msg) -> None:
        try:
            snap = codec.decode(msg.data, msg.headers, Snapshot, max_bytes=self.bus.settings.max_payload)
        except BusError as exc:
            self._log.warning("undecodable snapshot: %s", exc)
            return
        if snap.node != self.node_id:
            return
        try:
            self.trust.check(msg.data, msg.headers)
        except SignatureError as exc:  # counted and logged by the check; never applied
            cur = self.applier.applied
            nack = SnapshotAck(
                self.node_id, snap.nonce, snap.version, snap.digest, error=str(exc),
                applied_version=cur.version if cur else 0,
            )  # fmt: skip
            with contextlib.suppress(Exception):
                await self.bus.publish(self.bus.subjects.xds_ack(self.node_id), nack)
            return
        await self.handle(snap)

    async def handle(self, snap: Snapshot) -> None:
        if snap.node != self.node_id:
            return
        out = self.applier.offer(snap, now=time.time())
        if out.action == "need_full":
            self._resync.set()
            return
        if out.runtime is not None:
            self.swap(out.runtime)
            self.ready.set()
            self._resync.clear()  # it runs a current snapshot: a fetch still being retried is moot
            self._log_fates()
            self._log.info(
                "applied snapshot v%d (%s, %d resources)",
                snap.version,
                "delta" if snap.delta else "full",
                len(self.applier.applied.resources) if self.applier.applied else 0,
                extra={"node_id": self.node_id, "version": snap.version, "nonce": snap.nonce},
            )
        elif out.action == "nacked":
            self._log.warning(
                "refused snapshot v%d, keeping v%s: %s",
                snap.version,
                self.applier.applied.version if self.applier.applied else "none",
                self.applier.last_error,
                extra={"node_id": self.node_id, "version": snap.version, "nonce": snap.nonce},
            )
        if out.ack is not None:
            with contextlib.suppress(Exception):
                await self.bus.publish(self.bus.subjects.xds_ack(self.node_id), out.ack)
                self.acks_sent += 1
        if out.runtime is not None and self.settings.state_file and self.applier.applied is not None:
            try:
                save_state(self.settings.state_file, self.applier.applied, self.node_id)
            except OSError as exc:
                self._log.warning("could not save snapshot to %s: %s", self.settings.state_file, exc)

    def rebuild(self) -> None:
        """Build the applied snapshot again and swap it in (a REMOTE filter's host described its hooks
        after the build: the new chain calls it only for those)."""
        runtime = self.applier.rebuild()
        if runtime is not None:
            self.swap(runtime)
        elif self.applier.applied is not None:
            self._log.warning("rebuilding snapshot v%d failed: %s", self.applier.applied.version,
                              self.applier.last_error)  # fmt: skip

    def _log_fates(self) -> None:
        applied = self.applier.applied
        for line in self._fates.new_lines(applied.typed if applied is not None else ()):
            self._log.warning("config: %s", line)

    # -- heartbeats and resync
    def set_app_health(self, state: str, detail: str) -> None:
        """Report the app's health (`meshbus.proxy.mesh.prober`); a change goes out at once."""
        if (state, detail) == (self.app_health, self.app_health_detail):
            return
        self.app_health, self.app_health_detail = state, detail
        self._beat_now.set()

    def heartbeat(self) -> Heartbeat:
        cur = self.applier.applied
        self._seq += 1
        return Heartbeat(
            workload=self.workload,
            applied_version=cur.version if cur else 0,
            applied_digest=cur.digest if cur else "",
            last_error=self.applier.last_error,
            seq=self._seq,
            app_health=self.app_health,
            app_health_detail=self.app_health_detail,
        )

    async def _heartbeat_loop(self) -> None:
        reconnects = self.bus.stats.reconnects
        subject = self.bus.subjects.xds_heartbeat(self.node_id)
        while True:
            self._beat_now.clear()  # before the beat is built: a change made after it wakes the next
            if not self._draining and self.bus.connected:
                with contextlib.suppress(Exception):
                    await self.bus.publish(subject, self.heartbeat())
                if self.bus.stats.reconnects != reconnects:
                    # Pushes may have been lost while we were away: ask for the current snapshot.
                    reconnects = self.bus.stats.reconnects
                    self._resync.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.heartbeat_interval):
                    await self._beat_now.wait()

    async def _on_config_dump(self, msg: Msg) -> None:
        try:
            codec.decode(msg.data, msg.headers, ProxyConfigRequest)
        except BusError as exc:  # not a request this proxy answers: say so here, never raise into nats-py
            self._log.warning("ignored a malformed config-dump request: %s", exc)
            return
        if not msg.reply:
            return
        cur = self.applier.applied
        dump: dict[str, Any] = {}
        if self.applier.runtime is not None:
            try:
                dump = self.applier.runtime.config_dump()
            except Exception as exc:  # a dump bug must not hide the snapshot itself
                dump = {"error": one_line(exc)}
        reply = ProxyConfigReply(
            node=self.node_id,
            version=cur.version if cur else 0,
            digest=cur.digest if cur else "",
            config_revision=cur.config_revision if cur else 0,
            applied_at=cur.applied_at if cur else 0.0,
            resources=[dict(cur.resources[k]) for k in sorted(cur.resources)] if cur else [],
            runtime=dump,
        )
        data, headers = codec.encode(reply)
        await self.bus.nc.publish(msg.reply, data, headers=headers)


# -- command line (proxy/__main__.py wires these into meshbus-proxy's mesh mode) ----------------


def agent_settings_from_args(args: Any, *, inbound_port: int = 0) -> AgentSettings:
    ports = {k: int(v) for k, v in parse_labels(args.service_port).items()}
    return AgentSettings(
        service=args.service,
        namespace=args.namespace,
        service_account=args.service_account,
        labels=parse_labels(args.labels),
        node_id=args.node_id,
        address=args.advertise,
        ports=ports,
        inbound_port=inbound_port,
        app_port=args.app_port,
        state_file=args.state_file
        or (os.path.join(args.state_dir, SNAPSHOT_FILE) if args.state_dir else None),
    )
