"""Load balancers over a cluster's available endpoints (Envoy semantics, Istio names).

- ROUND_ROBIN: next endpoint in turn.
- LEAST_REQUEST (Istio's default): power of two random choices, fewer active requests wins.
- RANDOM: uniform.
- consistentHash: a ring hash (Envoy's default minimum ring size 1024) keyed by header, cookie,
  source IP or query parameter. A request without the key gets a random endpoint, as in Envoy.
  Ejected endpoints are skipped by walking the ring forward, so keys of healthy endpoints stay put.

Hashes use blake2b, not ``hash()``, so every worker process maps a key to the same endpoint.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.core.match import parse_query

if TYPE_CHECKING:
    from meshbus.proxy.core.routing import RequestView

Rng = Callable[[], float]


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class Balancer:
    """What a cluster picks endpoints with: a native base, so that the compiled cluster calls ``pick``
    through the vtable (by name it was a method lookup a request)."""

    __slots__ = ()

    def pick(self, eps: Sequence[Endpoint], hash_key: int | None, rng: Rng) -> Endpoint:
        raise NotImplementedError


class RoundRobin(Balancer):
    name = "ROUND_ROBIN"
    __slots__ = ("_next",)

    def __init__(self) -> None:
        self._next = 0

    def pick(self, eps: Sequence[Endpoint], hash_key: int | None, rng: Rng) -> Endpoint:
        i = self._next % len(eps)
        self._next = i + 1
        return eps[i]


class LeastRequest(Balancer):
    name = "LEAST_REQUEST"
    __slots__ = ()

    def pick(self, eps: Sequence[Endpoint], hash_key: int | None, rng: Rng) -> Endpoint:
        n = len(eps)
        if n == 1:
            return eps[0]
        a = eps[int(rng() * n)]
        b = eps[int(rng() * n)]
        return b if b.active_requests < a.active_requests else a


class RandomLB(Balancer):
    name = "RANDOM"
    __slots__ = ()

    def pick(self, eps: Sequence[Endpoint], hash_key: int | None, rng: Rng) -> Endpoint:
        return eps[int(rng() * len(eps))]


class RingHash:
    name = "RING_HASH"
    __slots__ = ("_hashes", "_owners")

    def __init__(self, endpoints: Sequence[Endpoint], min_ring_size: int = 1024) -> None:
        points: list[tuple[int, Endpoint]] = []
        if endpoints:
            per_host = max(1, -(-min_ring_size // len(endpoints)))
            for ep in endpoints:
                base = f"{ep.address}:{ep.port}_"
                points.extend((stable_hash(f"{base}{i}"), ep) for i in range(per_host))
        points.sort(key=lambda p: p[0])
        self._hashes = [h for h, _ in points]
        self._owners = [e for _, e in points]

    def pick_ring(self, hash_key: int, usable: Callable[[Endpoint], bool]) -> Endpoint | None:
        hashes, owners = self._hashes, self._owners
        n = len(hashes)
        if n == 0:
            return None
        start = bisect_left(hashes, hash_key)
        for k in range(n):
            ep = owners[(start + k) % n]
            if usable(ep):
                return ep
        return None


class HashPolicy:
    """Where the consistent-hash key of a request comes from."""

    __slots__ = ("kind", "name")

    def __init__(self, kind: str, name: str = "") -> None:
        self.kind = kind  # "header" | "cookie" | "source_ip" | "query"
        self.name = name

    def key(self, req: RequestView) -> int | None:
        kind = self.kind
        if kind == "header":
            value = req.headers.get(self.name)
        elif kind == "source_ip":
            value = req.source_ip or None
        elif kind == "cookie":
            value = _cookie(req.headers.get("cookie"), self.name)
        else:
            value = parse_query(req.path).get(self.name)
        return None if value is None else stable_hash(value)

    def describe(self) -> dict[str, Any]:
        return {"source_ip": {"useSourceIp": True}}.get(self.kind) or {self.kind: self.name}


def _cookie(header: str | None, name: str) -> str | None:
    if not header:
        return None
    for part in header.split(";"):
        k, sep, v = part.strip().partition("=")
        if sep and k == name:
            return v
    return None
