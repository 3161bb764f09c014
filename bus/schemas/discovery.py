"""Discovery (xDS over NATS) messages: registry, snapshots, ACK/NACK, status.

Flow (subjects in `meshbus.bus.subjects`):

- proxy -> ``xds.register`` (request, queue group): `Register` -> `RegisterReply`.
- proxy -> ``xds.heartbeat.<node>`` (publish, every replica listens): `Heartbeat` every second;
  it carries the whole workload so a replica that starts late rebuilds the registry from it.
- proxy -> ``xds.deregister`` (publish, every replica): `Deregister` when draining.
- proxy -> ``xds.fetch`` (request, queue group): `FetchRequest` -> `Snapshot` (at start and after
  a reconnect, or when a delta does not apply to what it runs).
- discovery -> ``xds.snapshot.<node>`` (publish): `Snapshot` pushes, full or delta.
- proxy -> ``xds.ack.<node>`` (publish, every replica): `SnapshotAck`; ``error`` set = NACK.
- meshctl -> ``xds.status`` (scatter/gather, every replica answers): `ProxyStatusReply`.
- config -> ``xds.hosts`` (request, queue group): `RegistryHostsRequest` -> `RegistryHostsReply`,
  so analysis on apply knows which hosts workloads registered.
- meshctl -> ``xds.configdump.<node>`` (request to the proxy): `ProxyConfigReply`.
- meshctl -> ``xds.certs.<node>`` (request to the proxy): `ProxyCertsReply` (in `.identity`).
- discovery -> ``xds.replica`` (publish): `ReplicaBeat`, so replicas agree who pushes to whom.

Resources travel as plain dicts in exactly the shape of the config KV values (apiVersion, kind,
metadata, spec; camelCase as the operator wrote them), so a mesh-mode proxy builds its runtime from
the same data a standalone proxy loads from YAML.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..codec import message


def resource_key(value: Mapping[str, Any]) -> str:
    """A snapshot resource's key (``Kind.namespace.name``): how snapshots, deltas and digests name it."""
    meta = value.get("metadata") or {}
    return f"{value.get('kind')}.{meta.get('namespace') or 'default'}.{meta.get('name')}"


APP_HEALTHY = "HEALTHY"
"""The sidecar's readiness probe of its app passes: the workload is in the endpoint sets."""
APP_UNHEALTHY = "UNHEALTHY"
"""The probe fails (``failureThreshold`` times in a row): the workload leaves every endpoint set."""
APP_UNKNOWN = "UNKNOWN"
"""Probing, no verdict yet: not in the endpoint sets (a Kubernetes pod is unready until its first
success)."""
APP_NOT_PROBED = ""
"""No ``--app-health`` (or a proxy from before health checks): in the endpoint sets while it beats."""
APP_SERVING = frozenset({APP_HEALTHY, APP_NOT_PROBED})


@message("meshbus.discovery.v1.Register")
@dataclass(frozen=True, slots=True)
class Register:
    """One workload behind one proxy, as the proxy describes it."""

    node_id: str
    """Proxy id, unique in the mesh and a valid subject token (``reviews-v1-3f9a2c``)."""
    service: str
    """Service the workload belongs to (short name, ``reviews``)."""
    namespace: str = "default"
    """Namespace of the service."""
    service_account: str = "default"
    """Service account (identity ``spiffe://<td>/ns/<namespace>/sa/<service_account>``)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Workload labels (``version: v1``); subsets and selectors match them."""
    address: str = "127.0.0.1"
    """Address peers connect to (the proxy's inbound listener)."""
    ports: dict[str, int] = field(default_factory=dict)
    """Service ports clients address, by port name (``{"http": 9080}``)."""
    inbound_port: int = 0
    """Port of the proxy's inbound listener on `address`; 0 = the service port itself (no sidecar)."""
    proxy_version: str = ""
    """meshbus version of the proxy."""


@message("meshbus.discovery.v1.RegisterReply")
@dataclass(frozen=True, slots=True)
class RegisterReply:
    """The replica that took a registration."""

    replica: str
    """Replica id of the discovery instance that answered."""
    expiry_s: float = 5.0
    """Seconds without a heartbeat after which the workload leaves every endpoint set."""


@message("meshbus.discovery.v1.Heartbeat")
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """I am alive, this is my workload, and this is the config I run."""

    workload: Register
    """The full registration (so replicas that missed `Register` rebuild from heartbeats)."""
    applied_version: int = 0
    """Version of the snapshot the proxy runs (0 = none yet)."""
    applied_digest: str = ""
    """Digest of that snapshot."""
    last_error: str = ""
    """Error of the last NACK since the last ACK ("" = none)."""
    seq: int = 0
    """Counts heartbeats since the proxy started."""
    app_health: str = APP_NOT_PROBED
    """The app's readiness as the sidecar probes it: `APP_HEALTHY`, `APP_UNHEALTHY`, `APP_UNKNOWN`, or
    `APP_NOT_PROBED` (also what a heartbeat from an older proxy decodes to). Only `APP_SERVING`
    states keep the workload in the endpoint sets; an unrecognised value is treated as not serving."""
    app_health_detail: str = ""
    """Why, in words (``GET :9080/healthz timed out after 1s (3 failure(s) in a row)``)."""


@message("meshbus.discovery.v1.Deregister")
@dataclass(frozen=True, slots=True)
class Deregister:
    """The proxy is draining: drop its workload from every endpoint set now."""

    node_id: str
    reason: str = "draining"


@message("meshbus.discovery.v1.FetchRequest")
@dataclass(frozen=True, slots=True)
class FetchRequest:
    """Give me my full snapshot (registers the workload too if the replica does not know it)."""

    workload: Register
    have_version: int = 0
    """Version the proxy runs (0 = none)."""
    have_digest: str = ""


@message("meshbus.discovery.v1.Snapshot")
@dataclass(frozen=True, slots=True)
class Snapshot:
    """An immutable, versioned config for one proxy (full), or a change to the one it runs (delta)."""

    version: int
    """Monotonic across replicas (a JetStream KV sequence); proxies ignore anything not newer."""
    digest: str
    """Content hash of the full resource set this snapshot describes (after applying a delta)."""
    node: str
    """The proxy this snapshot is for."""
    nonce: str
    """Unique per send; echoed in the ACK/NACK so stale replies are recognised."""
    resources: list[dict[str, Any]] = field(default_factory=list)
    """Full: every resource the proxy needs. Delta: only those added or changed."""
    delta: bool = False
    """True: apply `resources` and `removed` on top of `base_version`."""
    base_version: int = 0
    """For a delta: the version it applies to; a proxy running another version must fetch in full."""
    removed: list[str] = field(default_factory=list)
    """For a delta: keys (``Kind.namespace.name``) of resources to drop."""
    config_revision: int = 0
    """Highest config KV revision included (for humans: which apply this reflects)."""
    replica: str = ""
    """Replica id of the discovery instance that built it."""
    packed_resources: bytes = b""
    """The same resources as one msgpack array; when set it replaces `resources`. Discovery packs each
    resource once and reuses the bytes for every proxy, so a push costs bytes copied, not objects walked."""
    digests: list[str] = field(default_factory=list)
    """Content digest of each resource, in order: a proxy re-validates only what changed."""


@message("meshbus.discovery.v1.SnapshotAck")
@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """ACK (``error == ""``) or NACK (``error`` says why) of one snapshot, by nonce."""

    node: str
    nonce: str
    version: int
    """Version of the snapshot answered."""
    digest: str = ""
    error: str = ""
    """Empty = ACK. Otherwise the reason the proxy refused it (it keeps running `applied_version`)."""
    applied_version: int = 0
    """Version the proxy runs after handling this snapshot."""


@message("meshbus.discovery.v1.ReplicaBeat")
@dataclass(frozen=True, slots=True)
class ReplicaBeat:
    """A discovery replica is alive (sent every second)."""

    replica: str
    leaving: bool = False
    """True when the replica shuts down: others take its proxies over at once."""


@message("meshbus.discovery.v1.ProxyStatusRequest")
@dataclass(frozen=True, slots=True)
class ProxyStatusRequest:
    """Ask every discovery replica for its view of every proxy."""


@dataclass(frozen=True, slots=True)
class ProxyStatus:
    """One proxy as one replica sees it (meshctl merges the replicas' rows by node)."""

    node: str
    service: str
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)
    address: str = ""
    proxy_version: str = ""
    sent_version: int = 0
    """Last version this replica pushed to the proxy (0 = this replica sent nothing)."""
    sent_at: float = 0.0
    """Unix time of that push."""
    acked_version: int = 0
    """Version the proxy last reported running (from ACKs and heartbeats)."""
    nack_version: int = 0
    """Version of the last NACK not followed by a newer ACK (0 = none)."""
    nack_error: str = ""
    registered_at: float = 0.0
    """Unix time the workload (re)joined the registry."""
    last_seen: float = 0.0
    """Unix time of the last heartbeat."""
    app_health: str = APP_NOT_PROBED
    """`Heartbeat.app_health` of the last heartbeat."""
    app_health_detail: str = ""


@message("meshbus.discovery.v1.ProxyStatusReply")
@dataclass(frozen=True, slots=True)
class ProxyStatusReply:
    replica: str
    live_replicas: int = 1
    """How many replicas this one sees alive: meshctl stops gathering once it has that many replies."""
    proxies: list[ProxyStatus] = field(default_factory=list)


@message("meshbus.discovery.v1.RegistryHostsRequest")
@dataclass(frozen=True, slots=True)
class RegistryHostsRequest:
    """Ask any discovery replica which service hosts the workload registry holds."""


@message("meshbus.discovery.v1.RegistryHostsReply")
@dataclass(frozen=True, slots=True)
class RegistryHostsReply:
    hosts: list[str] = field(default_factory=list)
    """FQDNs (``reviews.default.svc.cluster.local``) of services with at least one registered workload."""
    replica: str = ""


@message("meshbus.discovery.v1.ProxyConfigRequest")
@dataclass(frozen=True, slots=True)
class ProxyConfigRequest:
    """Ask one proxy for the snapshot it runs."""


@message("meshbus.discovery.v1.ProxyConfigReply")
@dataclass(frozen=True, slots=True)
class ProxyConfigReply:
    node: str
    version: int = 0
    digest: str = ""
    config_revision: int = 0
    applied_at: float = 0.0
    """Unix time the snapshot was applied."""
    resources: list[dict[str, Any]] = field(default_factory=list)
    runtime: dict[str, Any] = field(default_factory=dict)
    """The proxy's compiled runtime dump (listeners/routes/clusters), when it provides one."""
