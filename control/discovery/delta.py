"""Full snapshot or delta (sans-IO).

A delta lists only the resources added or changed and the keys removed since the content this
replica last sent the node. It is sent when it is safe and worth it: there is such a base, the
node did not refuse it (a NACKed base is not what it runs), and the delta carries fewer resources
than half the full snapshot. The base need not be ACKed yet: snapshots to one node travel in order
on one subject, so the proxy applies the base first; if it could not (lost in a reconnect, or
refused), the delta's ``base_version`` does not match what it runs, it ignores the delta and
fetches in full. Otherwise the proxy gets everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from .generate import NodeConfig
from .model import ConfigEntry


@dataclass(frozen=True, slots=True)
class SentContent:
    """What this replica last sent a node, kept to compute the next delta."""

    version: int
    digest: str
    keys: Mapping[str, str]
    """resource key -> resource digest."""


@dataclass(frozen=True, slots=True)
class Plan:
    delta: bool
    entries: list[ConfigEntry]
    """Full: every resource; delta: those added or changed."""
    removed: list[str] = field(default_factory=list)
    base_version: int = 0


def plan(cfg: NodeConfig, base: SentContent | None, *, base_refused: bool = False) -> Plan:
    full = Plan(False, list(cfg.entries))
    if base is None or base_refused:
        return full
    new = cfg.keys
    upserts = [e for e in cfg.entries if base.keys.get(e.key) != e.digest]
    removed = sorted(k for k in base.keys if k not in new)
    if (len(upserts) + len(removed)) * 2 >= max(len(cfg.entries), 1):
        return full
    return Plan(True, upserts, removed, base.version)
