"""Upstream clusters: endpoints, load balancing, circuit breaker and outlier detection together.

Names follow Istio: ``outbound|<port>|<subset>|<fqdn>`` and ``inbound|<port>||``. A Cluster is
built once per config; its Endpoint objects and CircuitBreaker are carried into the next config
when the cluster and endpoints persist (runtime.build_runtime ``previous=``), so in-flight requests
of the old config keep counting against the same state.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from meshbus.proxy.core import outlier
from meshbus.proxy.core.breaker import UNLIMITED, CircuitBreaker
from meshbus.proxy.core.endpoint import Endpoint
from meshbus.proxy.core.lb import Balancer, HashPolicy, LeastRequest, RandomLB, RingHash, Rng, RoundRobin
from meshbus.proxy.core.outlier import OutlierSettings

if TYPE_CHECKING:
    from meshbus.proxy.core.routing import RequestView

__all__ = ["Cluster", "Endpoint", "PoolSettings", "TlsSettings"]


@dataclass(frozen=True, slots=True)
class PoolSettings:
    max_connections: int = UNLIMITED
    max_pending: int = UNLIMITED
    max_requests: int = UNLIMITED
    max_requests_per_connection: int = 0  # 0 = unlimited; 1 disables keep-alive
    connect_timeout: float = 10.0
    idle_timeout: float = 3600.0
    max_retries: int = UNLIMITED

    def describe(self) -> dict[str, Any]:
        return {
            "maxConnections": self.max_connections,
            "http1MaxPendingRequests": self.max_pending,
            "http2MaxRequests": self.max_requests,
            "maxRequestsPerConnection": self.max_requests_per_connection,
            "connectTimeout": self.connect_timeout,
            "idleTimeout": self.idle_timeout,
            "maxRetries": self.max_retries,
        }


@dataclass(frozen=True, slots=True)
class TlsSettings:
    mode: str = "DISABLE"  # DISABLE | SIMPLE | MUTUAL | ISTIO_MUTUAL
    sni: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    ca_certificates: str | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    insecure_skip_verify: bool = False


class Cluster:
    __slots__ = (
        "_any_ejected",
        "_lb",
        "_ring",
        "breaker",
        "endpoints",
        "hash_policy",
        "lb_policy",
        "name",
        "outlier",
        "pool",
        "port",
        "rng",
        "service",
        "subset",
        "tls",
    )

    def __init__(
        self,
        name: str,
        service: str,
        port: int,
        subset: str = "",
        endpoints: Sequence[Endpoint] = (),
        *,
        pool: PoolSettings | None = None,
        tls: TlsSettings | None = None,
        lb_policy: str = "LEAST_REQUEST",
        hash_policy: HashPolicy | None = None,
        min_ring_size: int = 1024,
        outlier: OutlierSettings | None = None,
        breaker: CircuitBreaker | None = None,
        rng: Rng | None = None,
    ) -> None:
        self.name = name
        self.service = service
        self.port = port
        self.subset = subset
        self.endpoints: tuple[Endpoint, ...] = tuple(endpoints)
        self.pool = pool or PoolSettings()
        self.tls = tls
        self.outlier = outlier
        p = self.pool
        self.breaker = breaker or CircuitBreaker(
            p.max_connections, p.max_pending, p.max_requests, p.max_retries
        )
        self.rng: Rng = rng or random.random
        self.hash_policy = hash_policy
        self._ring: RingHash | None = None
        if hash_policy is not None:
            self.lb_policy = "RING_HASH"
            self._ring = RingHash(self.endpoints, min_ring_size)
            self._lb: Balancer = RandomLB()  # requests without a hash key
        else:
            self.lb_policy = lb_policy
            kinds: dict[str, type[Balancer]] = {"ROUND_ROBIN": RoundRobin, "RANDOM": RandomLB}
            self._lb = kinds.get(lb_policy, LeastRequest)()
        self._any_ejected = any(e.ejected_until for e in self.endpoints)

    def hash_key(self, req: RequestView) -> int | None:
        hp = self.hash_policy
        return None if hp is None else hp.key(req)

    def pick(self, hash_key: int | None, now: float) -> Endpoint | None:
        """An endpoint for the next request, or None (503 UH): ejected endpoints are skipped."""
        eps: Sequence[Endpoint] = self.endpoints
        if not eps:
            return None
        if self._any_ejected:
            healthy = [e for e in eps if e.ejected_until <= now]
            od = self.outlier
            # Panic mode (Envoy healthy_panic_threshold = Istio minHealthPercent): use every host.
            if not (od is not None and len(healthy) * 100 < od.min_health_percent * len(eps)):
                if not healthy:
                    return None
                if self._ring is not None and hash_key is not None:
                    return self._ring.pick_ring(hash_key, lambda e: e.ejected_until <= now)
                eps = healthy
        if self._ring is not None and hash_key is not None:
            return self._ring.pick_ring(hash_key, _always)
        return self._lb.pick(eps, hash_key, self.rng)

    def record_result(self, ep: Endpoint, *, status: int | None, error: str | None, now: float) -> None:
        """Feed one upstream result (status, or error kind such as "connect-failure") to outlier detection."""
        od = self.outlier
        if od is None:
            return
        if status is not None and status < 500 and ep.ejected_until <= now:
            # the common success: what outlier.record does for it, without two calls
            ep.consecutive_5xx = 0
            ep.consecutive_gateway = 0
            return
        code = outlier.result_code(status, error)
        if code is not None and outlier.record(od, self.endpoints, ep, code, now):
            self._any_ejected = True

    def tick(self, now: float) -> None:
        """Return endpoints whose ejection time has passed; call every ``outlier_interval`` seconds."""
        if self._any_ejected:
            self._any_ejected = outlier.restore_expired(self.endpoints, now) > 0

    @property
    def outlier_interval(self) -> float | None:
        return None if self.outlier is None else self.outlier.interval

    def healthy_count(self, now: float) -> int:
        return sum(1 for e in self.endpoints if e.ejected_until <= now)

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "service": self.service,
            "port": self.port,
            "subset": self.subset,
            "lbPolicy": self.lb_policy,
            "connectionPool": self.pool.describe(),
            "circuitBreaker": self.breaker.describe(),
            "endpoints": [e.describe(now) for e in self.endpoints],
        }
        if self.hash_policy is not None:
            out["consistentHash"] = self.hash_policy.describe()
        if self.outlier is not None:
            out["outlierDetection"] = self.outlier.describe()
        if self.tls is not None:
            out["tls"] = {"mode": self.tls.mode, "sni": self.tls.sni}
        return out

    def __repr__(self) -> str:
        return f"Cluster({self.name!r}, {len(self.endpoints)} endpoints)"


def _always(_ep: Endpoint) -> bool:
    return True
