"""Applying snapshots on the proxy, without I/O: accept/ignore rules, build off to the side, ACK/NACK.

`SnapshotApplier` decides what to do with a snapshot and builds the new runtime with
`build_runtime` (``previous=`` carries endpoint health over). Rules:
- a version not newer than the one applied is ignored (an equal one with the same digest is ACKed
  again: it is a duplicate); the same content under a newer version is adopted without a rebuild;
- a delta applies only on top of the version it names, otherwise a full fetch is needed;
- a snapshot that does not validate or build is NACKed with the error and never replaces the last
  good runtime.
`save_state` / `load_state` keep the last good snapshot on disk (msgpack, atomic rename) so a
restart while the control plane is down still serves. The bus side is `meshbus.proxy.mesh.agent`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from meshbus.bus.config.proxy_kinds import Resource
from meshbus.bus.schemas.config import manifest_resource
from meshbus.bus.schemas.discovery import Snapshot, SnapshotAck, resource_key
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.mesh.state_dir import write_private

log = logging.getLogger(__name__)

BuildFn = Callable[..., ProxyRuntime]
STATE_FORMAT = 1


class ResourceCache:
    """Typed resources by key, re-validated only when the dict changed.

    Validation goes through the config API's own models (`meshbus.bus.schemas.config.manifest_resource`,
    as discovery reads the stored values), so a snapshot is checked exactly like a stored value. One
    per agent; simulated fleets may share one.
    """

    def __init__(self, *, shared: bool = False) -> None:
        self._by_key: dict[str, tuple[Mapping[str, Any], str, Resource]] = {}
        self.shared = shared
        self.validations = 0

    def get(self, key: str, value: Mapping[str, Any], origin: str, digest: str = "") -> Resource:
        """The typed resource; ``digest`` (discovery's content digest) makes the hit check O(1)."""
        hit = self._by_key.get(key)
        if hit is not None and (
            hit[0] is value or (digest and hit[1] == digest) or (not digest and hit[0] == value)
        ):
            return hit[2]
        res = manifest_resource(value, origin)  # ValueError naming the resource and every bad field
        self.validations += 1
        self._by_key[key] = (value, digest, res)
        return res

    def retain(self, keys: set[str]) -> None:
        """Drop entries the proxy no longer runs (not for a shared cache: others may use them)."""
        if self.shared:
            return
        for k in [k for k in self._by_key if k not in keys]:
            del self._by_key[k]


@dataclass(frozen=True, slots=True)
class Applied:
    """The snapshot the proxy runs."""

    version: int
    digest: str
    nonce: str
    config_revision: int
    resources: Mapping[str, Mapping[str, Any]]
    applied_at: float
    digests: Mapping[str, str] = field(default_factory=dict)
    """resource key -> content digest (when discovery sent them)."""
    typed: tuple[Resource, ...] = ()
    """The validated resources, in key order (what the runtime was built from)."""
    order: Mapping[str, int] = field(default_factory=dict)
    """resource key -> index in ``typed``."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `SnapshotApplier.offer` decided."""

    action: str
    """``applied``, ``renumbered`` (same content, newer version: ACK, no rebuild), ``nacked``,
    ``duplicate`` (ACK again), ``ignored`` (older), ``need_full`` (delta on another base)."""
    ack: SnapshotAck | None = None
    runtime: ProxyRuntime | None = None


@dataclass
class SnapshotApplier:
    node_id: str
    namespace: str = "default"
    app_port: int | None = None
    build: BuildFn = build_runtime
    cache: ResourceCache = field(default_factory=ResourceCache)
    applied: Applied | None = None
    runtime: ProxyRuntime | None = None
    last_error: str = ""
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("applied", "renumbered", "nacked", "duplicate", "ignored", "need_full"), 0
        )
    )
    labels: Mapping[str, str] = field(default_factory=dict)  # the workload's (VirtualService sourceLabels)

    def offer(self, snap: Snapshot, *, now: float) -> Outcome:
        out = self._offer(snap, now)
        self.stats[out.action] += 1
        return out

    def _ack(self, snap: Snapshot, error: str = "") -> SnapshotAck:
        return SnapshotAck(
            node=self.node_id,
            nonce=snap.nonce,
            version=snap.version,
            digest=snap.digest,
            error=error,
            applied_version=self.applied.version if self.applied else 0,
        )

    def _offer(self, snap: Snapshot, now: float) -> Outcome:
        cur = self.applied
        if cur is not None and snap.version <= cur.version:
            if snap.version == cur.version and snap.digest == cur.digest:
                return Outcome("duplicate", self._ack(snap))
            return Outcome("ignored")
        if cur is not None and snap.digest == cur.digest and not snap.delta:
            # Same content under a newer version (another replica, a fetch): adopt it, nothing to build.
            self.applied = dataclasses.replace(
                cur, version=snap.version, digest=snap.digest, nonce=snap.nonce,
                config_revision=snap.config_revision, applied_at=now,
            )  # fmt: skip
            return Outcome("renumbered", self._ack(snap))
        if snap.delta:
            if cur is None or snap.base_version != cur.version:
                return Outcome("need_full")
            resources = dict(cur.resources)
            digests = dict(cur.digests)
            for k in snap.removed:
                resources.pop(k, None)
                digests.pop(k, None)
        else:
            resources, digests = {}, {}
        try:
            items = (
                msgpack.unpackb(snap.packed_resources, raw=False) if snap.packed_resources else snap.resources
            )
            if not isinstance(items, list):
                raise ValueError("meshbus: snapshot resources are not a list")
            given = snap.digests if len(snap.digests) == len(items) else [""] * len(items)
            upserted = []
            for r, d in zip(items, given, strict=True):
                key = resource_key(r)
                resources[key] = r
                digests[key] = d
                upserted.append(key)
            origin = f"snapshot v{snap.version}"
            if snap.delta and cur is not None and not snap.removed and all(k in cur.order for k in upserted):
                # The common push: resources replaced, none added or removed. Only those are looked up
                # (and validated when their digest is new); the key order is the one already applied.
                order = cur.order
                typed = list(cur.typed)
                for k in upserted:
                    typed[order[k]] = self.cache.get(k, resources[k], origin, digests[k])
                keys_changed = False
            else:
                keys = sorted(resources)
                order = {k: i for i, k in enumerate(keys)}
                typed = [self.cache.get(k, resources[k], origin, digests.get(k, "")) for k in keys]
                keys_changed = True
            runtime = self.build(
                typed,
                namespace=self.namespace,
                labels=self.labels,
                app_port=self.app_port,
                version=str(snap.version),
                previous=self.runtime,
            )
        except Exception as exc:  # pydantic ValidationError, RuntimeBuildError, anything a build raises
            self.last_error = one_line(exc)
            return Outcome("nacked", self._ack(snap, self.last_error))
        if keys_changed:
            self.cache.retain(set(resources))
        self.applied = Applied(
            snap.version, snap.digest, snap.nonce, snap.config_revision, resources, now, digests,
            tuple(typed), order,
        )  # fmt: skip
        self.runtime = runtime
        self.last_error = ""
        return Outcome("applied", self._ack(snap), runtime)

    def rebuild(self) -> ProxyRuntime | None:
        """Build the applied snapshot again (same version), e.g. when a REMOTE filter's host has
        described which hooks it implements after the build; None when there is nothing applied or the
        build fails (``last_error`` says why; the running runtime stays)."""
        cur = self.applied
        if cur is None:
            return None
        try:
            runtime = self.build(
                list(cur.typed),
                namespace=self.namespace,
                labels=self.labels,
                app_port=self.app_port,
                version=str(cur.version),
                previous=self.runtime,
            )
        except Exception as exc:  # as in _offer: whatever a build raises keeps the running runtime
            self.last_error = one_line(exc)
            return None
        self.runtime = runtime
        return runtime


def one_line(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    if not text.startswith("meshbus: "):
        text = f"meshbus: {text}"
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())[:2000]


# -- last good snapshot on disk -------------------------------------------------------------------


def save_state(path: str | Path, applied: Applied, node_id: str) -> None:
    """Write atomically (`write_private`): a crash leaves the old file or the new one, never half of one."""
    p = Path(path)
    doc = {
        "format": STATE_FORMAT,
        "node": node_id,
        "version": applied.version,
        "digest": applied.digest,
        "config_revision": applied.config_revision,
        "resources": list(applied.resources.values()),
        "saved_at": time.time(),
    }
    write_private(p, msgpack.packb(doc, use_bin_type=True))


def load_state(path: str | Path) -> Snapshot | None:
    """The saved snapshot as a full `Snapshot`, or None when there is none (or it is unreadable)."""
    p = Path(path)
    try:
        doc = msgpack.unpackb(p.read_bytes(), raw=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, msgpack.UnpackException) as exc:
        log.warning("ignoring unreadable snapshot file %s: %s", p, exc)
        return None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        log.warning("ignoring snapshot file %s of an unknown format", p)
        return None
    return Snapshot(
        version=int(doc.get("version", 0)),
        digest=str(doc.get("digest", "")),
        node=str(doc.get("node", "")),
        nonce="disk",
        resources=list(doc.get("resources") or []),
        config_revision=int(doc.get("config_revision", 0)),
    )
