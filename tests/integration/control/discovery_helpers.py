"""A small mesh for discovery integration tests: config KV, discovery replicas, real agents.

Agents are the real `meshbus.proxy.mesh.agent.MeshAgent` with the real `build_runtime`; only the swap
is a test callback (no listeners). Config is written to the KV bucket exactly as meshbus-config
stores it (`encode_value`), so discovery reads what it would read in production.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from meshbus.bus import BusConnection, BusSettings
from meshbus.bus.kv import BucketConfig, KeyValueStore
from meshbus.bus.schemas.config import StoredConfig, encode_value
from meshbus.bus.signing import Signer
from meshbus.control.discovery.client import proxy_status
from meshbus.control.discovery.server import DiscoveryServer, DiscoverySettings
from meshbus.control.discovery.status import ProxyView
from meshbus.proxy.build.runtime import ProxyRuntime
from meshbus.proxy.mesh.agent import AgentSettings, MeshAgent
from meshbus.proxy.mesh.snapshot_trust import SnapshotTrust
from tests.support.bounded import within

FAST = DiscoverySettings(
    expiry=1.0,
    sweep_interval=0.05,
    debounce_quiet=0.01,
    debounce_max=0.2,
    replica_interval=0.2,
    replica_expiry=0.7,
    warmup=0.25,
)


def stored(manifest: dict[str, Any]) -> StoredConfig:
    meta = manifest["metadata"]
    return StoredConfig(
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        namespace=meta.get("namespace", "default"),
        name=meta["name"],
        spec=manifest.get("spec", {}),
        updated="2026-11-27T19:00:00Z",
    )


def key_of(manifest: dict[str, Any]) -> str:
    meta = manifest["metadata"]
    return f"{manifest['kind']}.{meta.get('namespace', 'default')}.{meta['name']}"


def vs(weight_v1: int, host: str = "reviews", extra: dict[str, Any] | None = None) -> dict[str, Any]:
    route = [{"destination": {"host": host, "subset": "v1"}, "weight": weight_v1}]
    if weight_v1 < 100:
        route.append({"destination": {"host": host, "subset": "v2"}, "weight": 100 - weight_v1})
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": host, "namespace": "default"},
        "spec": {"hosts": [host], "http": [{"route": route, **(extra or {})}]},
    }


def dr(host: str = "reviews") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": host, "namespace": "default"},
        "spec": {
            "host": host,
            "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}},
            ],
        },
    }


@dataclass
class Sim:
    """One simulated sidecar: the real agent, a swap callback that records runtimes."""

    agent: MeshAgent
    swaps: list[ProxyRuntime] = field(default_factory=list)

    @property
    def node(self) -> str:
        return self.agent.node_id

    @property
    def version(self) -> int:
        return self.agent.applied.version if self.agent.applied else 0

    def resources(self) -> dict[str, Any]:
        return dict(self.agent.applied.resources) if self.agent.applied else {}

    def endpoints(self, service: str) -> list[str]:
        se = self.resources().get(f"ServiceEntry.default.mesh-registry-{service}")
        return sorted(e["address"] for e in se["spec"]["endpoints"]) if se else []

    def weights(self, host: str = "reviews") -> list[float]:
        rt = self.agent.runtime
        assert rt is not None
        for v in rt.config_dump()["listeners"]["outbound"]["virtualHosts"]:
            if v["name"].startswith(f"{host}."):
                return [d["weight"] for d in v["routes"][0]["destinations"]]
        return []


class Mesh:
    def __init__(self, url: str, root: str, settings: DiscoverySettings = FAST) -> None:
        self.url, self.root, self.settings = url, root, settings
        self.buses: list[BusConnection] = []
        self.replicas: list[DiscoveryServer] = []
        self.sims: list[Sim] = []
        self.kv: KeyValueStore | None = None
        self._ip = 0

    async def connect(self, name: str) -> BusConnection:
        bus = BusConnection(BusSettings(url=self.url, name=name, root=self.root, reconnect_max=0.3))
        await bus.connect()
        self.buses.append(bus)
        return bus

    async def start(self) -> Mesh:
        self.ops = await self.connect("ops")
        self.kv = KeyValueStore(self.ops, BucketConfig(self.ops.subjects.kv_bucket("config"), history=64))
        await self.kv.open()
        self.agents_bus = await self.connect("agents")
        return self

    async def put(self, manifest: dict[str, Any]) -> int:
        """Store a value as meshbus-config would, minus its validation (so tests can provoke NACKs)."""
        assert self.kv is not None
        return await self.kv.put(key_of(manifest), encode_value(stored(manifest)))

    async def delete(self, key: str) -> int:
        assert self.kv is not None
        return await self.kv.delete(key)

    async def discovery(
        self,
        replica_id: str | None = None,
        settings: DiscoverySettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        signer: Signer | None = None,
    ) -> DiscoveryServer:
        bus = await self.connect(f"discovery-{len(self.replicas)}")
        d = DiscoveryServer(bus, settings or self.settings, replica_id=replica_id, clock=clock, signer=signer)
        await d.start()
        self.replicas.append(d)
        return d

    async def sim(
        self,
        service: str,
        version: str = "v1",
        *,
        start: bool = True,
        trust: SnapshotTrust | None = None,
        **kw: Any,
    ) -> Sim:
        self._ip += 1
        settings = AgentSettings(
            service=service,
            labels={"app": service, "version": version},
            address=f"10.1.0.{self._ip}",
            app_port=9080,
            inbound_port=15006,
            heartbeat_interval=kw.pop("heartbeat_interval", 0.2),
            fetch_timeout=kw.pop("fetch_timeout", 1.0),
            retry_max=0.3,
            **kw,
        )
        s = Sim(MeshAgent(self.agents_bus, settings, lambda rt: None, trust=trust))
        s.agent.swap = s.swaps.append
        self.sims.append(s)
        if start:
            await s.agent.start()
        return s

    async def status(self) -> dict[str, ProxyView]:
        return {v.row.node: v for v in await proxy_status(self.ops, timeout=0.5)}

    async def close(self) -> None:
        for s in self.sims:
            await within(f"agent {s.node} to stop", s.agent.stop(deregister=False))
        for d in self.replicas:
            await within(f"discovery replica {d.replica_id} to stop", d.stop())
        for bus in self.buses:
            await within(f"bus connection {bus.settings.name} to close", bus.close())


async def wait_until(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> float:
    """Poll ``pred`` (cheap, in-memory) every 5 ms; returns the seconds it took."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def wait_status(
    mesh: Mesh, pred: Callable[[dict[str, ProxyView]], bool], timeout: float = 5.0
) -> dict[str, ProxyView]:
    start = time.monotonic()
    while True:
        st = await mesh.status()
        if pred(st):
            return st
        if time.monotonic() - start > timeout:
            raise AssertionError(f"status did not converge: {[(n, v.status_text) for n, v in st.items()]}")
        await asyncio.sleep(0.02)
