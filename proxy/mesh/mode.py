"""Mesh mode of meshbus-proxy: the agent (and the certificate client) beside a running ProxyServer.

The listeners are up before NATS is reached: the bus connects in the background (the agent waits
for it), so a proxy started before the control plane serves as soon as it gets a snapshot (or its
saved last good one) and catches up when NATS appears. ``/ready`` answers 503 with the reason
(``WAITING_FOR_SNAPSHOT``, then ``WAITING_FOR_CERTIFICATE`` when an identity is requested) until
both are in hand; with an app readiness probe (``--app-health``, `meshbus.proxy.mesh.probe`) it
also answers ``APP_UNHEALTHY: <why>`` while the app is not healthy, and the agent's heartbeat
carries the app's state so discovery drops the workload from every endpoint set meanwhile. On drain the agent deregisters first, so peers stop picking this proxy before its
connections close. Used by ``proxy/__main__.py``; tests drive it in-process the same way.

Telemetry: the proxy learns who it is (its workload's labels for Istio's metrics, the peer header
it sends), starts keeping SDK spans for sampled requests, and ships metric deltas, spans and access
logs to meshbus-telemetry (proxy/mesh/telemetry_ship.py).

It also answers ``xds_certs(<node>)`` with the certificate it holds (`cert_report`, also the admin's
``/certs``): asked of the proxy itself, as ``meshctl proxy-config`` asks for the snapshot, so the
answer is what the process really serves with, and it works while discovery is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import ssl
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from meshbus.bus import codec
from meshbus.bus.cert_report import certificate_info
from meshbus.bus.config.hosts import to_fqdn
from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.errors import BusError
from meshbus.bus.schemas.discovery import APP_HEALTHY, APP_UNKNOWN
from meshbus.bus.schemas.identity import (
    CERT_ACTIVE,
    CERT_NO_IDENTITY,
    CERT_REFUSED,
    CERT_WAITING,
    ProxyCertsReply,
    ProxyCertsRequest,
)
from meshbus.bus.schemas.telemetry import Source
from meshbus.bus.spiffe import SpiffeId
from meshbus.bus.subjects import inbox_prefix
from meshbus.bus.tasks import cancel_and_wait
from meshbus.proxy.build.runtime import build_runtime
from meshbus.proxy.mesh.agent import AgentSettings, MeshAgent
from meshbus.proxy.mesh.bus_auth import (
    BusAuth,
    client_context,
    ensure_certificate,
    reload_on_rotation,
    secured_settings,
)
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig
from meshbus.proxy.mesh.probe import ProbeSpec, ProbeTracker
from meshbus.proxy.mesh.prober import AppProber
from meshbus.proxy.mesh.ratelimit_client import install as install_lease_client
from meshbus.proxy.mesh.snapshot_trust import SnapshotTrust
from meshbus.proxy.mesh.telemetry_ship import BusSink, TelemetryShipper
from meshbus.telemetry.peer import Workload

log = logging.getLogger(__name__)

WAITING_FOR_SNAPSHOT = "WAITING_FOR_SNAPSHOT"
WAITING_FOR_CERTIFICATE = "WAITING_FOR_CERTIFICATE"
CERTIFICATE_REFUSED = "CERTIFICATE_REFUSED"
APP_UNHEALTHY = "APP_UNHEALTHY"


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """Ask meshbus-ca for ``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``."""

    token: str
    trust_domain: str = "cluster.local"
    state_dir: str | None = None
    """Where the key and certificate are kept across restarts (`CertClientConfig.state_dir`)."""
    bus_auth: BusAuth | None = None
    """A secured bus: NATS with the certificate, the first one over a bootstrap connection (`bus_auth`)."""


class MeshMode:
    """Owns the bus connection, the agent and the certificate client of one proxy server."""

    def __init__(
        self,
        server: Any,
        bus_settings: BusSettings,
        agent_settings: AgentSettings,
        identity: IdentitySettings | None = None,
        app_probe: ProbeSpec | None = None,
    ) -> None:
        self.server = server
        self.bus = BusConnection(bus_settings)
        plugins = getattr(server, "plugins", None)
        if plugins is not None:
            server.bus = self.bus  # REMOTE Plugins call their hosts over the agent's connection
        build = functools.partial(build_runtime, plugins=plugins)
        self.trust = SnapshotTrust(identity.state_dir if identity is not None else None)
        self.agent = MeshAgent(self.bus, agent_settings, swap=server.apply, build=build, trust=self.trust)
        if plugins is not None:
            server.mesh_rebuild = self.agent.rebuild  # a REMOTE filter described late: narrow its chain
        # its replies arrive on inboxes of its own: the only ones its NATS user may read
        self.bus.settings = dataclasses.replace(bus_settings, inbox_prefix=inbox_prefix("node", self.node_id))
        self.identity = identity
        self._bus_tls: ssl.SSLContext | None = None
        self.prober = AppProber(app_probe, self._on_probe) if app_probe is not None else None
        if self.prober is not None:  # not an endpoint until a probe passes, from the first heartbeat on
            self.agent.set_app_health(APP_UNKNOWN, self.prober.tracker.detail)
        self._stage = WAITING_FOR_SNAPSHOT
        """What the mesh side still waits for ("" once snapshot and certificate are in hand)."""
        self.cert_client: CertClient | None = None
        self.mesh_tls = False
        """True once the server took the certificate (``ProxyServer.enable_mesh_tls``)."""
        self.error = ""
        self.ready = asyncio.Event()
        """Set when the snapshot and (if requested) the certificate are in hand: /ready turns 200."""
        self._tasks: list[asyncio.Task[None]] = []
        self._certs_sub: Any = None
        self.shipper: TelemetryShipper | None = None

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    def start(self) -> None:
        """Begin in the background; the server's /ready turns 200 once everything is in hand."""
        self._set_stage(WAITING_FOR_SNAPSHOT)
        self._start_telemetry()
        self.server.drain_hooks.append(self.agent.drain)
        self.server.cert_report = self.cert_report
        self.server.mesh_info = self.info
        # Global rate limits (meshbus.io/v1 RateLimit) ask meshbus-policy for token leases over this bus.
        install_lease_client(self.bus, self.node_id)
        self._tasks.append(asyncio.create_task(self._connect(), name="meshbus-proxy-bus"))
        self._tasks.append(asyncio.create_task(self._gate(), name="meshbus-proxy-readiness"))
        self._tasks.append(asyncio.create_task(self._serve_certs(), name="meshbus-proxy-certs"))
        if self.prober is not None:
            self.prober.start()

    async def _connect(self) -> None:
        ident = self.identity
        auth = ident.bus_auth if ident is not None else None
        if ident is not None and auth is not None:
            try:
                await ensure_certificate(self.bus.settings, auth, self._cert_config(ident), self.trust)
            except BusError as exc:  # the token was refused: the bus stays closed to this proxy
                self.error = f"meshbus: certificate for {self.spiffe_id()} refused: {exc}"
                self._set_stage(CERTIFICATE_REFUSED)
                log.error("%s", self.error)
                return
            self._bus_tls = client_context(auth)
            self.bus.settings = secured_settings(self.bus.settings, self._bus_tls)
        await self.bus.connect(wait=True)

    def _cert_config(self, ident: IdentitySettings) -> CertClientConfig:
        settings = self.agent.settings
        spiffe_id = SpiffeId.workload(ident.trust_domain, settings.namespace, settings.service_account)
        return CertClientConfig(spiffe_id, token=ident.token, node=self.node_id, state_dir=ident.state_dir)

    def _start_telemetry(self) -> None:
        """Tell the server who it is, keep spans, and ship metrics, spans and access logs."""
        from meshbus.proxy.filters.spans import SpanRecorder

        s = self.agent.settings
        server = self.server
        workload = Workload.of(s.service, s.namespace, s.labels, s.service_account)
        dropped = server.internal.telemetry_dropped.labels
        resource = {
            "service.name": f"{workload.canonical_service}.{workload.namespace}",
            "service.namespace": workload.namespace,
            "service.version": workload.canonical_revision,
            "service.instance.id": self.node_id,
            "k8s.workload.name": workload.name,
        }
        buffer = SpanRecorder(dropped=dropped("spans"))
        server.observe.set_identity(workload, s.service, to_fqdn(s.service, s.namespace), buffer)
        source = Source(self.node_id, s.service, s.namespace, workload.name)
        server.add_access_log_sink(BusSink(self.bus, source, dropped("access_log")))

        def provider() -> str:
            tel = server.runtime.telemetry if server.runtime is not None else None
            return (tel.client.tracing.provider or tel.server.tracing.provider) if tel is not None else ""

        self.shipper = TelemetryShipper(
            self.bus, source, server.registry, buffer, dropped, resource=resource, provider=provider
        )
        self.shipper.start()

    # -- readiness (/ready): the mesh side first, then the app
    def _set_stage(self, stage: str) -> None:
        self._stage = stage
        self._refresh_ready()

    def _refresh_ready(self) -> None:
        reason = self._stage
        if not reason and self.prober is not None and self.prober.tracker.state != APP_HEALTHY:
            reason = f"{APP_UNHEALTHY}: {self.prober.tracker.detail}"
        self.server.not_ready = reason

    def _on_probe(self, tracker: ProbeTracker, _changed: bool) -> None:
        self.agent.set_app_health(tracker.state, tracker.detail)
        self._refresh_ready()

    async def _gate(self) -> None:
        await self.agent.start()
        if self.identity is not None:
            await self.agent.ready.wait()
            self._set_stage(WAITING_FOR_CERTIFICATE)
            if not await self._start_identity(self.identity):
                return
        await self.agent.ready.wait()
        self._set_stage("")
        self.ready.set()
        log.info("mesh mode ready: node %s runs snapshot v%s", self.node_id, self.server.runtime.version)

    async def _start_identity(self, ident: IdentitySettings) -> bool:
        config = self._cert_config(ident)
        spiffe_id = config.spiffe_id
        await self.bus.wait_connected()
        client = CertClient(self.bus, config)
        client.add_rotation_callback(lambda _ident: self.trust.set_keys(client.snapshot_keys))
        if ident.bus_auth is not None and self._bus_tls is not None:
            client.add_rotation_callback(reload_on_rotation(ident.bus_auth, self._bus_tls))
        try:
            await client.start()
        except BusError as exc:  # the token was refused: retrying cannot help, stay unready and say why
            self.error = f"meshbus: certificate for {spiffe_id} refused: {exc}"
            self._set_stage(CERTIFICATE_REFUSED)
            log.error("%s", self.error)
            return False
        self.cert_client = client
        enable = getattr(self.server, "enable_mesh_tls", None)
        if enable is None:
            log.warning("certificate %s obtained, but this proxy build has no mesh mTLS yet", spiffe_id)
        else:
            enable(client, labels=dict(self.agent.settings.labels))
            self.mesh_tls = True
        log.info("certificate for %s obtained", spiffe_id)
        return True

    def info(self) -> dict[str, Any]:
        """What /server_info shows of the mesh side: the node, and which snapshots it trusts."""
        return {
            "node": self.node_id,
            "snapshot_keys": self.trust.key_ids,
            "snapshots_refused": self.trust.refused,
            "last_snapshot_refusal": self.trust.last_refusal,
            "bus_tls": self._bus_tls is not None,
        }

    # -- meshctl cert inspect PROXY_ID / admin /certs
    def spiffe_id(self) -> str:
        if self.identity is None:
            return ""
        s = self.agent.settings
        return str(SpiffeId.workload(self.identity.trust_domain, s.namespace, s.service_account))

    def cert_report(self) -> ProxyCertsReply:
        """The certificate this proxy holds now (or why it holds none)."""
        client = self.cert_client
        if self.identity is None:
            return ProxyCertsReply(node=self.node_id, state=CERT_NO_IDENTITY)
        if client is None or client.current is None:
            state = CERT_REFUSED if self.error else CERT_WAITING
            return ProxyCertsReply(
                node=self.node_id, state=state, spiffe_id=self.spiffe_id(), last_error=self.error
            )
        ident = client.current
        info = certificate_info(
            ident.cert_chain_pem,
            bundle_pem=ident.bundle_pem,
            bundle_version=ident.bundle_version,
            renewal_at=client.next_renewal_at,
            renewals=client.renewals,
        )
        return ProxyCertsReply(
            node=self.node_id,
            state=CERT_ACTIVE,
            spiffe_id=str(ident.spiffe_id),
            certificate=info,
            last_error=client.last_error,
            renewal_failures=client.failures,
        )

    async def _serve_certs(self) -> None:
        await self.bus.wait_connected()
        self._certs_sub = await self.bus.subscribe(self.bus.subjects.xds_certs(self.node_id), self._on_certs)

    async def _on_certs(self, msg: Msg) -> None:
        if not msg.reply:
            return
        try:
            codec.decode(msg.data, msg.headers, ProxyCertsRequest)
            reply = self.cert_report()
        except Exception as exc:  # a report bug must not kill the subscription; say so to the asker
            log.exception("cert report failed")
            reply = ProxyCertsReply(node=self.node_id, state="ERROR", last_error=str(exc))
        data, headers = codec.encode(reply)
        await self.bus.nc.publish(msg.reply, data, headers=headers)

    async def stop(self) -> None:
        """After the server drained: stop the agent (it deregistered in the drain hook) and the bus."""
        if self.prober is not None:
            await self.prober.stop()
        await cancel_and_wait(self._tasks, logger=log)
        self._tasks.clear()
        if self.shipper is not None:
            await self.shipper.stop()
        sub, self._certs_sub = self._certs_sub, None
        if sub is not None:
            with contextlib.suppress(Exception):  # the connection may already be closed
                await sub.unsubscribe()
        await self.agent.stop(deregister=self.bus.connected)
        if self.cert_client is not None:
            await self.cert_client.stop()
        await self.bus.close()
