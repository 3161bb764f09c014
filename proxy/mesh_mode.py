"""Mesh mode of meshbus-proxy: the agent (and the certificate client) beside a running ProxyServer.

The listeners are up before NATS is reached: the bus connects in the background (the agent waits
for it), so a proxy started before the control plane serves as soon as it gets a snapshot (or its
saved last good one) and catches up when NATS appears. ``/ready`` answers 503 with the reason
(``WAITING_FOR_SNAPSHOT``, then ``WAITING_FOR_CERTIFICATE`` when an identity is requested) until
both are in hand. On drain the agent deregisters first, so peers stop picking this proxy before its
connections close. Used by ``proxy/__main__.py``; tests drive it in-process the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.errors import BusError
from meshbus.bus.spiffe import SpiffeId
from meshbus.proxy.agent import AgentSettings, MeshAgent
from meshbus.proxy.identity import CertClient, CertClientConfig

log = logging.getLogger(__name__)

WAITING_FOR_SNAPSHOT = "WAITING_FOR_SNAPSHOT"
WAITING_FOR_CERTIFICATE = "WAITING_FOR_CERTIFICATE"


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    """Ask meshbus-ca for ``spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>``."""

    token: str
    trust_domain: str = "cluster.local"


class MeshMode:
    """Owns the bus connection, the agent and the certificate client of one proxy server."""

    def __init__(
        self,
        server: Any,
        bus_settings: BusSettings,
        agent_settings: AgentSettings,
        identity: IdentitySettings | None = None,
    ) -> None:
        self.server = server
        self.bus = BusConnection(bus_settings)
        self.agent = MeshAgent(self.bus, agent_settings, swap=server.apply)
        self.identity = identity
        self.cert_client: CertClient | None = None
        self.mesh_tls = False
        """True once the server took the certificate (``ProxyServer.enable_mesh_tls``)."""
        self.error = ""
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def node_id(self) -> str:
        return self.agent.node_id

    def start(self) -> None:
        """Begin in the background; the server's /ready turns 200 once everything is in hand."""
        self.server.not_ready = WAITING_FOR_SNAPSHOT
        self.server.drain_hooks.append(self.agent.drain)
        self._tasks.append(asyncio.create_task(self.bus.connect(wait=True), name="meshbus-proxy-bus"))
        self._tasks.append(asyncio.create_task(self._gate(), name="meshbus-proxy-readiness"))

    async def _gate(self) -> None:
        await self.agent.start()
        if self.identity is not None:
            await self.agent.ready.wait()
            self.server.not_ready = WAITING_FOR_CERTIFICATE
            if not await self._start_identity(self.identity):
                return
        await self.agent.ready.wait()
        self.server.not_ready = ""
        log.info("mesh mode ready: node %s runs snapshot v%s", self.node_id, self.server.runtime.version)

    async def _start_identity(self, ident: IdentitySettings) -> bool:
        settings = self.agent.settings
        spiffe_id = SpiffeId.workload(ident.trust_domain, settings.namespace, settings.service_account)
        await self.bus.wait_connected()
        client = CertClient(self.bus, CertClientConfig(spiffe_id, token=ident.token, node=self.node_id))
        try:
            await client.start()
        except BusError as exc:  # the token was refused: retrying cannot help, stay unready and say why
            self.error = f"meshbus: certificate for {spiffe_id} refused: {exc}"
            self.server.not_ready = "CERTIFICATE_REFUSED"
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

    async def stop(self) -> None:
        """After the server drained: stop the agent (it deregistered in the drain hook) and the bus."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        await self.agent.stop(deregister=self.bus.connected)
        if self.cert_client is not None:
            await self.cert_client.stop()
        await self.bus.close()
