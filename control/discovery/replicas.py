"""Which discovery replica pushes to which proxy (sans-IO, clock passed in).

Every replica announces itself each second; every replica keeps the set of live ones and picks
the owner of a node by rendezvous hashing (highest ``hash(replica, node)`` wins). All replicas
compute the same owner from the same set, so each proxy gets its pushes from exactly one replica;
when a replica dies or leaves, only its nodes move (to the next-highest hash), and the new owner
pushes only if the node does not already run the content it would send. During the seconds in
which two replicas disagree on the set, a node may get a push from both: versions come from one
JetStream sequence, so the proxy applies the newer and ignores the older (see versions.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


def _score(replica: str, node: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{replica}/{node}".encode(), digest_size=8).digest(), "big")


def owner_of(node: str, replicas: list[str] | tuple[str, ...] | set[str]) -> str | None:
    best: tuple[int, str] | None = None
    for r in replicas:
        cand = (_score(r, node), r)
        if best is None or cand > best:
            best = cand
    return best[1] if best else None


@dataclass(slots=True)
class ReplicaSet:
    me: str
    expiry: float = 3.0
    seen: dict[str, float] = field(default_factory=dict)
    """Other replicas -> monotonic time last heard."""

    def live(self) -> list[str]:
        return sorted({self.me, *self.seen})

    def heard(self, replica: str, now: float, *, leaving: bool = False) -> bool:
        """Record a beat; True when the live set changed."""
        if replica == self.me:
            return False
        if leaving:
            return self.seen.pop(replica, None) is not None
        new = replica not in self.seen
        self.seen[replica] = now
        return new

    def expire(self, now: float) -> bool:
        gone = [r for r, t in self.seen.items() if now - t > self.expiry]
        for r in gone:
            del self.seen[r]
        return bool(gone)

    def owns(self, node: str) -> bool:
        return owner_of(node, self.live()) == self.me
