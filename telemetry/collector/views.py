"""What ``meshctl top`` and the graph show, computed from the replicas' edge stats (sans-IO).

`merge` adds up the `StatsReply` of every replica (each counted different batches). Per edge the
destination's report is preferred, as Kiali does: it knows whether the request came over mTLS and
what really reached the app; the client's report stands in where no destination sidecar reported
(a destination outside the mesh, or one without a sidecar).

`top_rows` gives, per service and per workload, what ``linkerd viz stat`` gives: requests per
second, success rate (non-5xx), p50/p90/p99 latency from the duration histogram, and the share of
requests over mTLS. `kiali_graph` shapes the same edges as Kiali's graph API
(``elements.nodes[].data`` / ``elements.edges[].data`` with ``traffic``), nodes per workload.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from meshbus.bus.schemas.telemetry import EdgeStats, StatsReply, edge_stats
from meshbus.telemetry.exposition import histogram_quantile
from meshbus.telemetry.fields import REPORTER_DESTINATION, REPORTER_SOURCE, UNKNOWN
from meshbus.telemetry.metrics import ISTIO_DEFAULT_BUCKETS, HistogramChild

_KEY = slice(1, 11)  # EdgeStats fields after the reporter: who called whom, through which service


@dataclass(slots=True)
class Merged:
    window_s: float
    replicas: int
    proxies: int
    edges: list[EdgeStats]
    buckets: tuple[float, ...] = ISTIO_DEFAULT_BUCKETS


def _key(e: EdgeStats) -> tuple[str, ...]:
    return (
        e.reporter, e.source_workload, e.source_namespace, e.source_app, e.source_version, e.source_principal,
        e.destination_workload, e.destination_namespace, e.destination_app, e.destination_version,
        e.destination_service,
    )  # fmt: skip


def merge(replies: Iterable[StatsReply], window_s: float) -> Merged:
    """The replicas' edges added up, one per (reporter, edge)."""
    total: dict[tuple[str, ...], tuple[int, int, int, list[int]]] = {}
    n = 0
    proxies = 0
    for r in replies:
        n += 1
        proxies += r.proxies
        for e in r.edges:
            k = _key(e)
            t = total.get(k)
            if t is None:
                total[k] = (e.requests, e.errors, e.mtls, list(e.duration_buckets))
            else:
                buckets = [a + b for a, b in zip(t[3], e.duration_buckets, strict=False)]
                total[k] = (t[0] + e.requests, t[1] + e.errors, t[2] + e.mtls, buckets)
    return Merged(window_s, n, proxies, [edge_stats(k, *v) for k, v in total.items()])


def preferred(edges: Iterable[EdgeStats]) -> list[EdgeStats]:
    """One report per edge: the destination's, else the source's."""
    by: dict[tuple[str, ...], EdgeStats] = {}
    for e in edges:
        k = _key(e)[_KEY]
        have = by.get(k)
        if have is None or (have.reporter == REPORTER_SOURCE and e.reporter == REPORTER_DESTINATION):
            by[k] = e
    # A client's report of a call the server also reported names the server's workload the same way;
    # where the server reported under a different source (no peer header: plaintext from outside),
    # both stay: they are different callers as far as anyone can tell.
    return list(by.values())


def quantile(q: float, buckets: list[int], bounds: tuple[float, ...] = ISTIO_DEFAULT_BUCKETS) -> float | None:
    if len(buckets) != len(bounds) + 1 or not sum(buckets):
        return None
    child = HistogramChild(bounds)
    child.counts = list(buckets)
    v = histogram_quantile(q, child)
    return None if math.isnan(v) else round(v, 3)


@dataclass(slots=True)
class Row:
    name: str
    namespace: str
    requests: int = 0
    errors: int = 0
    mtls: int = 0
    buckets: list[int] | None = None

    def add(self, e: EdgeStats) -> None:
        self.requests += e.requests
        self.errors += e.errors
        self.mtls += e.mtls
        if self.buckets is None:
            self.buckets = list(e.duration_buckets)
        else:
            self.buckets = [a + b for a, b in zip(self.buckets, e.duration_buckets, strict=False)]

    def as_dict(self, window: float) -> dict[str, Any]:
        b = self.buckets or []
        return {
            "name": self.name,
            "namespace": self.namespace,
            "requests": self.requests,
            "rps": round(self.requests / window, 3) if window else 0.0,
            "success_rate": round(1 - self.errors / self.requests, 4) if self.requests else None,
            "p50_ms": quantile(0.5, b),
            "p90_ms": quantile(0.9, b),
            "p99_ms": quantile(0.99, b),
            "mtls_share": round(self.mtls / self.requests, 4) if self.requests else None,
        }


def top_rows(m: Merged) -> dict[str, list[dict[str, Any]]]:
    """``{"services": [...], "workloads": [...]}``, each row what `Row.as_dict` says, by name."""
    services: dict[tuple[str, str], Row] = {}
    workloads: dict[tuple[str, str], Row] = {}
    for e in preferred(m.edges):
        svc = e.destination_service
        ns = svc.split(".")[1] if svc.count(".") >= 1 else e.destination_namespace
        services.setdefault((svc, ns), Row(svc, ns)).add(e)
        wkey = (e.destination_workload, e.destination_namespace)
        workloads.setdefault(wkey, Row(*wkey)).add(e)
    order = sorted
    return {
        "services": [services[k].as_dict(m.window_s) for k in order(services)],
        "workloads": [workloads[k].as_dict(m.window_s) for k in order(workloads)],
    }


def _node_id(workload: str, namespace: str) -> str:
    return f"{namespace}/{workload}" if workload != UNKNOWN else f"unknown/{namespace}"


def kiali_graph(m: Merged) -> dict[str, Any]:
    """Kiali's graph shape (``GET /api/namespaces/graph``): workload nodes, edges with traffic."""
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, Any]] = []

    def node(workload: str, ns: str, app: str, version: str, service: str = "") -> str:
        nid = _node_id(workload, ns)
        data = nodes.get(nid)
        if data is None:
            data = nodes[nid] = {
                "id": nid,
                "nodeType": "workload" if workload != UNKNOWN else "unknown",
                "namespace": ns,
                "workload": workload,
                "app": app,
                "version": version,
                "traffic": [{"protocol": "http", "rates": {}}],
            }
        if service and "service" not in data:
            data["service"] = service
        return nid

    window = m.window_s
    for e in preferred(m.edges):
        src = node(e.source_workload, e.source_namespace, e.source_app, e.source_version)
        dst = node(e.destination_workload, e.destination_namespace, e.destination_app, e.destination_version,
                   e.destination_service)  # fmt: skip
        rps = e.requests / window if window else 0.0
        err = 100.0 * e.errors / e.requests if e.requests else 0.0
        p99 = quantile(0.99, e.duration_buckets)
        edges.append(
            {
                "data": {
                    "id": f"{src}->{dst}#{e.destination_service}",
                    "source": src,
                    "target": dst,
                    "destService": e.destination_service,
                    "reporter": e.reporter,
                    "traffic": {
                        "protocol": "http",
                        "rates": {"http": f"{rps:.3f}", "httpPercentErr": f"{err:.1f}"},
                        "requests": e.requests,
                    },
                    "responseTime": p99,
                    "isMTLS": f"{100.0 * e.mtls / e.requests:.0f}" if e.requests else "0",
                }
            }
        )
    for d in nodes.values():
        out_rps = sum(
            float(x["data"]["traffic"]["rates"]["http"]) for x in edges if x["data"]["source"] == d["id"]
        )
        in_rps = sum(
            float(x["data"]["traffic"]["rates"]["http"]) for x in edges if x["data"]["target"] == d["id"]
        )
        d["traffic"][0]["rates"] = {"httpIn": f"{in_rps:.3f}", "httpOut": f"{out_rps:.3f}"}
    return {
        "timestamp": None,
        "duration": window,
        "graphType": "workload",
        "elements": {"nodes": [{"data": d} for d in nodes.values()], "edges": edges},
        "replicas": m.replicas,
        "proxies": m.proxies,
    }
