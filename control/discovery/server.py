"""meshbus-discovery's asyncio adapter: bus wiring around the sans-IO core.

Inputs: the config KV bucket (watched), heartbeats / deregistrations / ACKs of every proxy and
beats of the other replicas (plain subscriptions: every replica hears everything), register and
fetch requests (queue group: any replica answers). Output: snapshots on each owned proxy's subject.

Pipeline (STYLE E4): change -> `PushRequest` -> `Debouncer` -> nodes it concerns
(`SnapshotGenerator.affected`) -> only the nodes this replica owns (`ReplicaSet`) -> `PushQueue`
-> generate -> skip unchanged or held-after-NACK (`AckLedger.should_send`) -> consistency check ->
full or delta (`delta.plan`) -> publish. One version per push cycle, from `VersionSource`.

Readiness: fetch answers ``not_ready`` until the config bucket is loaded and the replica has
listened to heartbeats for ``warmup`` seconds (so it never hands out a snapshot without endpoints
it simply has not heard of yet). While the replica is cut off from NATS nothing expires; expiry
clocks restart when it reconnects, and the config watch is re-established with a full resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
from nats.aio.msg import Msg

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError, NotReadyError, PermissionDeniedError
from meshbus.bus.schemas.discovery import (
    Deregister,
    FetchRequest,
    Heartbeat,
    ProxyStatusReply,
    ProxyStatusRequest,
    Register,
    RegisterReply,
    RegistryHostsReply,
    RegistryHostsRequest,
    ReplicaBeat,
    Snapshot,
    SnapshotAck,
)
from meshbus.bus.service import BusService, EndpointSpec
from meshbus.bus.signing import Signer
from meshbus.bus.subjects import node_of
from meshbus.bus.tasks import cancel_and_wait

from .acks import AckLedger, Outcome
from .config_watch import ConfigWatch
from .debounce import Debouncer
from .delta import SentContent, plan
from .generate import NodeConfig, SnapshotGenerator
from .jwks_inline import JwksInliner
from .jwks_watch import JwksWatch
from .push_queue import PushQueue
from .push_request import PushRequest
from .registry import Registry, RegistryChange
from .replicas import ReplicaSet
from .status import status_rows
from .versions import VersionSource

log = logging.getLogger(__name__)
_ARRAY = msgpack.Packer(use_bin_type=True)


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    expiry: float = 3.0
    """Seconds without a heartbeat before a workload leaves every endpoint set (proxies beat each 1 s)."""
    sweep_interval: float = 0.25
    debounce_quiet: float = 0.02
    debounce_max: float = 0.5
    replica_interval: float = 1.0
    replica_expiry: float = 3.0
    warmup: float = 1.5
    """Seconds to listen to heartbeats after start before answering fetches and pushing."""
    create_config_bucket: bool = False
    """Create the config bucket if meshbus-config has not (tests, single-process dev)."""
    deltas: bool = True
    yield_every: int = 32
    """Generate this many nodes, then let ACKs and heartbeats in."""


@dataclass
class DiscoveryStats:
    cycles: int = 0
    pushes: int = 0
    deltas: int = 0
    skipped: int = 0
    inconsistent: int = 0
    fetches: int = 0
    errors: int = 0
    last_cycle_ms: float = 0.0
    last_cycle_nodes: int = 0


def same_node(subject: str, node: str) -> None:
    """A proxy speaks for one node only: the one its (NATS-permitted) subject names."""
    if node_of(subject) != node:
        raise PermissionDeniedError(f"message for node {node!r} on the subject of {node_of(subject)!r}")


class DiscoveryServer:
    def __init__(
        self,
        bus: BusConnection,
        settings: DiscoverySettings | None = None,
        *,
        replica_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.bus = bus
        self.signer = signer
        """Signs every snapshot it sends, pushed or fetched (`meshbus.bus.signing`); None: unsigned."""
        self.settings = s = settings or DiscoverySettings()
        self.replica_id = replica_id or f"discovery-{uuid.uuid4().hex[:8]}"
        self.clock, self.wall = clock, wall
        self._log = logger or log
        self.registry = Registry(expiry=s.expiry)
        self.generator = SnapshotGenerator(self.registry)
        self.ledger = AckLedger()
        self.replicas = ReplicaSet(self.replica_id, expiry=s.replica_expiry)
        self.debouncer = Debouncer(quiet=s.debounce_quiet, max_delay=s.debounce_max)
        self.queue = PushQueue()
        self.sent: dict[str, SentContent] = {}
        self.last_push: dict[str, int] = {}
        """node -> version of the last snapshot this replica pushed to it (fetch answers excluded)."""
        self.stats = DiscoveryStats()
        self.versions = VersionSource(bus)
        # JWT key sets meshbus-policy fetched go inline into RequestAuthentications (jwks_inline.py).
        self.jwks = JwksInliner(wall)
        self.config = ConfigWatch(
            bus, self._on_config, create=s.create_config_bucket, logger=self._log, transform=self.jwks.inline
        )
        self.jwks_watch = JwksWatch(bus, self.jwks, self.config.reapply, logger=self._log)
        self.service = BusService(bus, "discovery", description="meshbus discovery (Pilot role)")
        self.service.add_endpoint(
            EndpointSpec(
                "register",
                Register,
                self._register,
                subject=bus.subjects.xds_register_all(),
                requires_ready=False,
                subject_check=lambda subject, reg: same_node(subject, reg.node_id),
            )
        )
        self.service.add_endpoint(
            EndpointSpec(
                "fetch",
                FetchRequest,
                self._fetch,
                subject=bus.subjects.xds_fetch_all(),
                subject_check=lambda subject, req: same_node(subject, req.workload.node_id),
                sign=self.signer.headers if self.signer is not None else None,
            )
        )
        # Ready (warm) first: a replica that has not yet heard every heartbeat would leave hosts out.
        self.service.add_endpoint(
            EndpointSpec("hosts", RegistryHostsRequest, self._hosts, subject=bus.subjects.xds_hosts())
        )
        self._pushed_model = self.generator.model
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._subs: list[Any] = []
        self._started = 0.0
        self._warm = False
        self._cut_off = False
        self._nonce = 0
        self._withheld: set[tuple[str, str]] = set()

    # -- lifecycle
    async def start(self) -> None:
        subj = self.bus.subjects
        self._started = self.clock()
        for subject, cb in (
            (subj.xds_heartbeat_all(), self._on_heartbeat),
            (subj.xds_ack_all(), self._on_ack),
            (subj.xds_deregister_all(), self._on_deregister),
            (subj.xds_replica(), self._on_replica),
            (subj.xds_status(), self._on_status),
        ):
            self._subs.append(await self.bus.subscribe(subject, self._guard(cb)))
        await self.service.start()
        await self.config.start()
        await self.jwks_watch.start()
        for coro, name in (
            (self._push_loop(), "push"),
            (self._sweep_loop(), "sweep"),
            (self._replica_loop(), "replica-beat"),
        ):
            self._tasks.append(asyncio.create_task(coro, name=f"meshbus-discovery-{name}"))
        self._log.info("discovery replica %s started", self.replica_id)

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(
                self.bus.subjects.xds_replica(), ReplicaBeat(self.replica_id, leaving=True)
            )
        await cancel_and_wait(self._tasks, logger=self._log)
        self._tasks.clear()
        await self.jwks_watch.stop()
        await self.config.stop()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        await self.service.stop()

    async def __aenter__(self) -> DiscoveryServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def ready(self) -> bool:
        return self.service.ready

    def _guard(self, cb: Callable[[Msg], Any]) -> Callable[[Msg], Any]:
        async def handler(msg: Msg) -> None:
            try:
                await cb(msg)
            except BusError as exc:
                self.stats.errors += 1
                self._log.debug("dropped message on %s: %s", msg.subject, exc)
            except Exception:
                self.stats.errors += 1
                self._log.exception("handler for %s failed", msg.subject)

        return handler

    def _request(self, req: PushRequest) -> None:
        self.debouncer.add(req, self.clock())
        self._wake.set()

    # -- config
    def _on_config(self, model_changes: list[str], new_model: Any) -> None:
        moved = self.generator.set_model(new_model, model_changes)
        self._request(PushRequest.of("config", config=set(model_changes), nodes=moved))

    # -- registry
    def _registry_changed(self, change: RegistryChange) -> None:
        entry = self.registry.get(change.node_id)
        nodes: set[str] = set()
        if change.kind == "removed":
            self.generator.untrack(change.node_id)
            self.queue.discard(change.node_id)
            self.ledger.forget(change.node_id)
            self.sent.pop(change.node_id, None)
            self.last_push.pop(change.node_id, None)
            self._log.info("workload %s left the registry (%s)", change.node_id, change.reason)
        elif entry is not None:
            self.generator.track(entry.workload)
            nodes.add(change.node_id)
            if change.kind == "added":
                self._log.info("workload %s joined (%s)", change.node_id, change.reason)
        self.generator.update_services(change.services)
        self._request(PushRequest.of(f"registry-{change.kind}", services=change.services, nodes=nodes))

    async def _on_heartbeat(self, msg: Msg) -> None:
        hb = codec.decode(msg.data, msg.headers, Heartbeat)
        same_node(msg.subject, hb.workload.node_id)
        change = self.registry.heartbeat(hb, now=self.clock(), wall=self.wall())
        self.ledger.record_running(
            hb.workload.node_id, version=hb.applied_version, digest=hb.applied_digest, error=hb.last_error
        )
        if change is not None:
            if change.reason in ("app-unhealthy", "app-healthy"):
                self._log.info(
                    "app of workload %s is %s%s: endpoints of %s.%s updated",
                    change.node_id,
                    hb.app_health.lower() or "not probed",
                    f" ({hb.app_health_detail})" if hb.app_health_detail else "",
                    hb.workload.service,
                    hb.workload.namespace,
                )
            self._registry_changed(change)

    async def _on_deregister(self, msg: Msg) -> None:
        dereg = codec.decode(msg.data, msg.headers, Deregister)
        same_node(msg.subject, dereg.node_id)
        change = self.registry.remove(dereg.node_id, reason=dereg.reason)
        if change is not None:
            self._registry_changed(change)

    async def _register(self, reg: Register) -> RegisterReply:
        change = self.registry.upsert(reg, now=self.clock(), wall=self.wall())
        if change is not None:
            self._registry_changed(change)
        return RegisterReply(replica=self.replica_id, expiry_s=self.settings.expiry)

    # -- acks
    async def _on_ack(self, msg: Msg) -> None:
        ack = codec.decode(msg.data, msg.headers, SnapshotAck)
        same_node(msg.subject, ack.node)
        outcome = self.ledger.on_reply(ack, now=self.wall())
        if outcome is Outcome.NACK:
            self._log.warning(
                "proxy %s refused snapshot v%d: %s",
                ack.node,
                ack.version,
                ack.error,
                extra={"node_id": ack.node, "version": ack.version, "nonce": ack.nonce},
            )

    # -- replicas
    async def _on_replica(self, msg: Msg) -> None:
        beat = codec.decode(msg.data, msg.headers, ReplicaBeat)
        if self.replicas.heard(beat.replica, self.clock(), leaving=beat.leaving):
            self._log.info("discovery replicas now %s", ",".join(self.replicas.live()))
            self._request(PushRequest.of("replicas", full=True))

    async def _replica_loop(self) -> None:
        beat = ReplicaBeat(self.replica_id)
        while True:
            with contextlib.suppress(Exception):
                await self.bus.publish(self.bus.subjects.xds_replica(), beat)
            await asyncio.sleep(self.settings.replica_interval)

    # -- status (scatter/gather: every replica answers)
    async def _on_status(self, msg: Msg) -> None:
        codec.decode(msg.data, msg.headers, ProxyStatusRequest)
        if not msg.reply:
            return
        data, headers = codec.encode(self.status())
        await self.bus.nc.publish(msg.reply, data, headers=headers)

    async def _hosts(self, _req: RegistryHostsRequest) -> RegistryHostsReply:
        return RegistryHostsReply(self.registry.hosts(), self.replica_id)

    def status(self) -> ProxyStatusReply:
        return ProxyStatusReply(
            self.replica_id, len(self.replicas.live()), status_rows(self.registry, self.ledger)
        )

    # -- sweep: expiry, replica liveness, warm-up, reconnects
    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                self._sweep()
            except Exception:
                self.stats.errors += 1
                self._log.exception("sweep failed")

    def _sweep(self) -> None:
        now = self.clock()
        if not self.bus.connected:
            self._cut_off = True
            return
        if self._cut_off:
            # We could not hear anyone: give every workload a fresh expiry window, resync pushes.
            self._cut_off = False
            self.registry.touch_all(now)
            self.replicas.seen = dict.fromkeys(self.replicas.seen, now)
            self._request(PushRequest.of("reconnect", full=True))
        for change in self.registry.expire(now):
            self._registry_changed(change)
        if self.replicas.expire(now):
            self._log.info("discovery replicas now %s", ",".join(self.replicas.live()))
            self._request(PushRequest.of("replicas", full=True))
        if not self._warm and self.config.synced and now - self._started >= self.settings.warmup:
            self._warm = True
            self.service.set_ready()
            self._request(PushRequest.of("warmup", full=True))

    # -- fetch
    async def _fetch(self, req: FetchRequest) -> Snapshot:
        if not self._warm:
            raise NotReadyError("discovery is still loading config and heartbeats")
        self.stats.fetches += 1
        w = req.workload
        change = self.registry.upsert(w, now=self.clock(), wall=self.wall(), reason="fetch")
        if change is not None:
            self._registry_changed(change)
        self.generator.track(w)
        cfg = self.generator.generate(w)
        if cfg.problems:
            raise NotReadyError("snapshot is inconsistent: " + "; ".join(cfg.problems))
        node = w.node_id
        if req.have_version and req.have_digest == cfg.digest:
            # It runs exactly this: confirm with an empty answer, no rebuild, nothing to send.
            self._nonce += 1
            nonce = f"{self.replica_id[-8:]}-{self._nonce}"
            self.ledger.confirm_running(
                node, version=req.have_version, nonce=nonce, digest=cfg.digest, now=self.wall()
            )
            self.sent[node] = SentContent(req.have_version, cfg.digest, cfg.keys)
            return Snapshot(
                version=req.have_version,
                digest=cfg.digest,
                node=node,
                nonce=nonce,
                delta=True,
                base_version=req.have_version,
                config_revision=cfg.config_revision,
                replica=self.replica_id,
            )
        version = await self.versions.current(self._stamp())
        # A delta is fine when the proxy still runs what this replica last sent it.
        return self._record(node, cfg, version, acked=(req.have_version, req.have_digest))

    def _stamp(self) -> tuple[int, int, int]:
        return (self.generator.model.generation, self.generator.services_generation, self.registry.generation)

    def _record(
        self, node: str, cfg: NodeConfig, version: int, *, acked: tuple[int, str] | None = None
    ) -> Snapshot:
        """Plan (full or delta), build and record one snapshot for ``node``."""
        led = self.ledger.row(node)
        base = self.sent.get(node) if self.settings.deltas else None
        if base is not None and acked is not None and acked != (base.version, base.digest):
            base = None  # a fetch from a proxy that does not run our last send: give it everything
        refused = base is not None and led.nack_digest == base.digest and led.nack_version > led.acked_version
        p = plan(cfg, base, base_refused=refused)
        self._nonce += 1
        nonce = f"{self.replica_id[-8:]}-{self._nonce}"
        snap = Snapshot(
            version=version,
            digest=cfg.digest,
            node=node,
            nonce=nonce,
            delta=p.delta,
            base_version=p.base_version,
            removed=p.removed,
            config_revision=cfg.config_revision,
            replica=self.replica_id,
            packed_resources=_ARRAY.pack_array_header(len(p.entries)) + b"".join(e.packed for e in p.entries),
            digests=[e.digest for e in p.entries],
        )
        self.ledger.record_sent(node, version=version, nonce=nonce, digest=cfg.digest, now=self.wall())
        self.sent[node] = SentContent(version, cfg.digest, cfg.keys)
        return snap

    def _report_withheld(self) -> None:
        now = self.generator.withheld()
        new = sorted(now - self._withheld)
        self._withheld = now
        if new:
            shown = ", ".join(f"{key} (-> {host})" for key, host in new[:5])
            more = f" and {len(new) - 5} more" if len(new) > 5 else ""
            self._log.warning(
                "holding back %d VirtualService route(s) to hosts no ServiceEntry or workload provides yet: %s%s",
                len(new),
                shown,
                more,
            )

    async def _publish_snapshot(self, node: str, snap: Snapshot) -> None:
        data, headers = codec.encode(snap)
        if self.signer is not None:
            headers.update(self.signer.headers(data))
        await self.bus.nc.publish(self.bus.subjects.xds_snapshot(node), data, headers=headers)

    # -- push
    async def _push_loop(self) -> None:
        while True:
            deadline = self.debouncer.deadline()
            if deadline is None or not self._warm:
                self._wake.clear()
                timeout = None if self._warm else self.settings.sweep_interval
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            delay = deadline - self.clock()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            req = self.debouncer.poll(self.clock())
            if req is None:
                continue
            try:
                await self.push(req)
            except BusError as exc:
                # No version (JetStream away): keep the request and try again shortly.
                self.stats.errors += 1
                self._log.warning("push deferred: %s", exc)
                self._request(req)
                await asyncio.sleep(0.5)
            except Exception:  # a bug must not stop pushes for good: log, count, retry in full
                self.stats.errors += 1
                self._log.exception("push failed; retrying with a full push")
                self._request(PushRequest.of("retry", full=True))
                await asyncio.sleep(0.5)

    async def push(self, req: PushRequest) -> int:
        """One push cycle; returns how many snapshots were published."""
        started = time.perf_counter()
        previous = self._pushed_model
        nodes = self.generator.affected(req, previous)
        self._pushed_model = self.generator.model
        for node in nodes:
            if self.replicas.owns(node):
                self.queue.enqueue(node, req)
        version: int | None = None
        published = processed = 0
        while (item := self.queue.dequeue()) is not None:
            node, _req = item
            try:
                entry = self.registry.get(node)
                if entry is None:
                    continue
                cfg = self.generator.generate(entry.workload)
                led = self.ledger.row(node)
                if not self.ledger.should_send(node, cfg.digest):
                    if node not in self.sent and led.acked_digest == cfg.digest:
                        # Another replica (or our previous life) sent it: adopt it as the delta base.
                        self.sent[node] = SentContent(led.acked_version, cfg.digest, cfg.keys)
                        self.ledger.record_sent(
                            node, version=led.acked_version, nonce="", digest=cfg.digest, now=self.wall()
                        )
                    self.stats.skipped += 1
                    continue
                problems = cfg.problems
                if problems:
                    self.stats.inconsistent += 1
                    self._log.error("not pushing to %s, snapshot inconsistent: %s", node, "; ".join(problems))
                    continue
                if version is None:
                    try:
                        version = await self.versions.next(self._stamp())
                    except BusError:
                        self._pushed_model = previous  # the retry must see the same changes
                        raise
                snap = self._record(node, cfg, version)
                try:
                    await self._publish_snapshot(node, snap)
                except Exception as exc:  # e.g. larger than the server's max_payload: this node only
                    self.stats.errors += 1
                    self.ledger.forget(node)  # not sent: the next change (or fetch) tries again
                    self.sent.pop(node, None)
                    self._log.error("could not publish snapshot v%d to %s: %r", version, node, exc)
                    continue
                published += 1
                self.stats.deltas += snap.delta
                self.last_push[node] = version
            finally:
                self.queue.mark_done(node)
            processed += 1
            if processed % self.settings.yield_every == 0:
                await asyncio.sleep(0)
        self._report_withheld()
        self.stats.cycles += 1
        self.stats.pushes += published
        self.stats.last_cycle_nodes = published
        self.stats.last_cycle_ms = (time.perf_counter() - started) * 1000
        self.service.details.update(
            cycles=str(self.stats.cycles),
            pushes=str(self.stats.pushes),
            deltas=str(self.stats.deltas),
            last_cycle_ms=f"{self.stats.last_cycle_ms:.2f}",
            last_cycle_concerned=str(len(nodes)),
            last_cycle_pushed=str(published),
            workloads=str(len(self.registry)),
            replicas=str(len(self.replicas.live())),
        )
        if published:
            self._log.info(
                "pushed v%s to %d proxies (%d concerned, %s) in %.1f ms",
                version,
                published,
                len(nodes),
                req.describe(),
                self.stats.last_cycle_ms,
                extra={"version": version},
            )
        return published
