"""PushRequest: what changed since the last push, merged across a burst (Istio ``PushRequest.Merge``).

A request names changed config keys (``Kind.namespace.name``), services whose endpoint set changed,
and nodes whose own registration changed; ``full`` means "recompute every node" (a Sidecar changed,
the replica set changed, a resync). Merging is a union, so a burst of N applies costs one push.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

ServiceKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class PushRequest:
    full: bool = False
    config: frozenset[str] = frozenset()
    services: frozenset[ServiceKey] = frozenset()
    nodes: frozenset[str] = frozenset()
    reasons: tuple[tuple[str, int], ...] = field(default=())
    """(reason, count), e.g. (("config", 3), ("heartbeat", 1)): for logs and metrics."""

    @classmethod
    def of(
        cls,
        reason: str,
        *,
        full: bool = False,
        config: frozenset[str] | set[str] = frozenset(),
        services: frozenset[ServiceKey] | set[ServiceKey] = frozenset(),
        nodes: frozenset[str] | set[str] = frozenset(),
    ) -> PushRequest:
        return cls(full, frozenset(config), frozenset(services), frozenset(nodes), ((reason, 1),))

    def merge(self, other: PushRequest | None) -> PushRequest:
        if other is None:
            return self
        counts: Counter[str] = Counter(dict(self.reasons))
        counts.update(dict(other.reasons))
        return PushRequest(
            full=self.full or other.full,
            config=self.config | other.config,
            services=self.services | other.services,
            nodes=self.nodes | other.nodes,
            reasons=tuple(sorted(counts.items())),
        )

    @property
    def empty(self) -> bool:
        return not (self.full or self.config or self.services or self.nodes)

    def describe(self) -> str:
        why = ",".join(f"{r}={n}" for r, n in self.reasons) or "-"
        scope = (
            "full"
            if self.full
            else f"config={len(self.config)} services={len(self.services)} nodes={len(self.nodes)}"
        )
        return f"{scope} reasons={why}"
