"""Workload registry built from registrations and heartbeats (sans-IO; the clock is passed in).

Rules:
- A heartbeat carries the whole registration, so a replica that missed `Register` (or started
  late) learns the workload from the next heartbeat; there is no other source of truth.
- A workload whose last heartbeat is older than ``expiry`` seconds leaves the registry at the next
  `expire` call; a `Deregister` removes it at once.
- A workload is an endpoint only while its app is serving as the sidecar last reported it
  (`Heartbeat.app_health` in `APP_SERVING`: healthy, or not probed). A workload whose app is
  unhealthy (or not yet probed healthy) stays registered (its proxy still gets its snapshots,
  proxy-status still lists it) but leaves `endpoints`, so every snapshot drops it; it returns with
  the first heartbeat that reports it healthy again. When no workload of a service is serving, all
  of them stay (Envoy's panic routing, at its limit): a health path that fails everywhere, e.g. a
  misconfigured one, must not turn a running service into an unknown host.
- Every change that alters an endpoint set bumps ``generation`` and is reported as a
  `RegistryChange`, naming the service whose endpoint set changed, so pushes stay incremental.
- While the replica itself is cut off from NATS, silence proves nothing: `touch_all` restarts every
  workload's expiry clock when the connection returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from meshbus.bus.config.hosts import to_fqdn
from meshbus.bus.schemas.discovery import APP_NOT_PROBED, APP_SERVING, Heartbeat, Register

ServiceKey = tuple[str, str]
"""(namespace, service)."""


def service_key(reg: Register) -> ServiceKey:
    return (reg.namespace, reg.service)


def service_host(reg: Register) -> str:
    return to_fqdn(reg.service, reg.namespace)


@dataclass(slots=True)
class Entry:
    """One registered workload and what its proxy last told us."""

    workload: Register
    registered_at: float
    """Wall-clock seconds (for humans: AGE)."""
    last_seen: float
    """Monotonic seconds of the last heartbeat (for expiry)."""
    last_seen_wall: float = 0.0
    applied_version: int = 0
    applied_digest: str = ""
    last_error: str = ""
    app_health: str = APP_NOT_PROBED
    app_health_detail: str = ""

    @property
    def serving(self) -> bool:
        """In the endpoint sets: its app is healthy or not probed."""
        return self.app_health in APP_SERVING


@dataclass(frozen=True, slots=True)
class RegistryChange:
    node_id: str
    kind: str
    """``added``, ``updated``, ``removed``."""
    services: frozenset[ServiceKey]
    """Services whose endpoint set changed (both old and new on a move)."""
    reason: str = ""


@dataclass(slots=True)
class Registry:
    expiry: float = 5.0
    entries: dict[str, Entry] = field(default_factory=dict)
    by_service: dict[ServiceKey, dict[str, Register]] = field(default_factory=dict)
    generation: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, node_id: str) -> bool:
        return node_id in self.entries

    def get(self, node_id: str) -> Entry | None:
        return self.entries.get(node_id)

    def workloads(self) -> Iterator[Register]:
        return (e.workload for e in self.entries.values())

    def endpoints(self, key: ServiceKey) -> list[Register]:
        """Serving workloads of one service (all, when none is), ordered by node id (stable digests)."""
        members = self.by_service.get(key, {})
        order = sorted(members)
        return [members[n] for n in order if self.entries[n].serving] or [members[n] for n in order]

    def services(self) -> list[ServiceKey]:
        return sorted(self.by_service)

    def hosts(self) -> list[str]:
        """FQDN of every service with a registered workload, sorted."""
        return sorted(to_fqdn(service, namespace) for namespace, service in self.by_service)

    # -- changes
    def upsert(
        self, reg: Register, *, now: float, wall: float, reason: str = "register"
    ) -> RegistryChange | None:
        """Add or refresh a workload; returns a change only when the registry content changed."""
        entry = self.entries.get(reg.node_id)
        if entry is not None:
            entry.last_seen = now
            entry.last_seen_wall = wall
            if entry.workload == reg:
                return None
            old = entry.workload
            self._unindex(old)
            entry.workload = reg
            self._index(reg)
            self.generation += 1
            return RegistryChange(
                reg.node_id, "updated", frozenset({service_key(old), service_key(reg)}), reason
            )
        self.entries[reg.node_id] = Entry(reg, registered_at=wall, last_seen=now, last_seen_wall=wall)
        self._index(reg)
        self.generation += 1
        return RegistryChange(reg.node_id, "added", frozenset({service_key(reg)}), reason)

    def heartbeat(self, hb: Heartbeat, *, now: float, wall: float) -> RegistryChange | None:
        node = hb.workload.node_id
        before = self.entries.get(node)
        was_serving = before.serving if before is not None else None
        change = self.upsert(hb.workload, now=now, wall=wall, reason="heartbeat")
        entry = self.entries[node]
        entry.applied_version = hb.applied_version
        entry.applied_digest = hb.applied_digest
        entry.last_error = hb.last_error
        entry.app_health = hb.app_health
        entry.app_health_detail = hb.app_health_detail
        if change is None and was_serving is not None and was_serving != entry.serving:
            self.generation += 1
            reason = "app-healthy" if entry.serving else "app-unhealthy"
            return RegistryChange(node, "updated", frozenset({service_key(entry.workload)}), reason)
        return change

    def remove(self, node_id: str, *, reason: str = "deregister") -> RegistryChange | None:
        entry = self.entries.pop(node_id, None)
        if entry is None:
            return None
        self._unindex(entry.workload)
        self.generation += 1
        return RegistryChange(node_id, "removed", frozenset({service_key(entry.workload)}), reason)

    def expire(self, now: float) -> list[RegistryChange]:
        """Drop every workload not heard from for longer than ``expiry``."""
        stale = [n for n, e in self.entries.items() if now - e.last_seen > self.expiry]
        out = []
        for node_id in stale:
            change = self.remove(node_id, reason="expired")
            if change is not None:
                out.append(change)
        return out

    def touch_all(self, now: float) -> None:
        """Restart every expiry clock (after this replica itself was disconnected)."""
        for e in self.entries.values():
            e.last_seen = now

    def _index(self, reg: Register) -> None:
        self.by_service.setdefault(service_key(reg), {})[reg.node_id] = reg

    def _unindex(self, reg: Register) -> None:
        key = service_key(reg)
        members = self.by_service.get(key)
        if members is not None:
            members.pop(reg.node_id, None)
            if not members:
                del self.by_service[key]
