"""One typed config form: the same YAML gives the same runtime from every source the proxy reads it from.

- file: the YAML loader's models (standalone ``--in-process-config``);
- worker: those models pickled by the loader child and unpickled in a worker (standalone default);
- snapshot: stored by meshbus-config (``to_stored`` + ``encode_value``), read back by discovery
  (``decode_value``, ``ConfigEntry.from_value``), packed into a snapshot as discovery sends it, and
  applied by the proxy's `SnapshotApplier` (validated by its `ResourceCache`).
The runtimes are compared by their config dump and by where a set of requests is routed.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import msgpack
import pytest

from meshbus.bus.config import load_text
from meshbus.bus.config.resources import Resource
from meshbus.bus.schemas.config import decode_value, encode_value
from meshbus.bus.schemas.discovery import Snapshot
from meshbus.control.config.manifest import to_stored
from meshbus.control.discovery.model import ConfigEntry
from meshbus.proxy.bootstrap import dump_config
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.mesh.snapshot_apply import SnapshotApplier
from tests.unit.proxy.conftest import req

pytestmark = pytest.mark.unit

BOOKINFO = (Path(__file__).parent / "fixtures" / "bookinfo.yaml").read_text()

# Most of what the builders read, deprecated spellings included (the models convert those).
RICH = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9443, name: https, protocol: HTTPS, targetPort: 8443}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}, serviceAccount: reviews}
  - {address: 10.0.0.2, labels: {version: v2}, ports: {http: 19080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: other}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: https, protocol: HTTPS}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 50, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 10, maxRetries: 3, idleTimeout: 30s, maxRequestsPerConnection: 100}
    outlierDetection: {consecutive5xxErrors: 3, interval: 5s, baseEjectionTime: 15s, maxEjectionPercent: 50}
    loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 2048}}
    portLevelSettings:
    - port: {number: 9443}
      tls: {mode: SIMPLE, sni: reviews.example}
      loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - {name: v1, labels: {version: v1}}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      outlierDetection: {consecutiveErrors: 2}
      connectionPool: {http: {http2MaxRequests: 7}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match:
    - {name: by-header, headers: {x-canary: {exact: "1"}}, uri: {prefix: /api}}
    - {name: by-query, queryParams: {canary: {regex: "y.*"}}, ignoreUriCase: true, uri: {exact: /API/Thing}}
    route: [{destination: {host: reviews, subset: v2}}]
    rewrite: {uri: /v2/api, authority: reviews-canary}
    headers:
      request: {set: {x-route: canary}, add: {x-added: "1"}, remove: [x-drop]}
      response: {set: {x-served-by: canary}}
    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: "5xx,429", backoff: {baseInterval: 10ms}}
    timeout: 3s
  - name: regex-rewrite
    match: [{uri: {regex: "/old/(.*)"}}]
    rewrite: {uriRegexRewrite: {match: "/old/(.*)", rewrite: "/new/\\\\1"}}
    route: [{destination: {host: reviews, subset: v1, port: {number: 9080}}}]
  - name: moved
    match: [{uri: {exact: /moved}}]
    redirect: {uri: /elsewhere, authority: ratings, redirectCode: 308}
  - name: teapot
    match: [{method: {exact: BREW}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - name: main
    fault:
      delay: {fixedDelay: 100ms, percent: 10}
      abort: {httpStatus: 503, percentage: {value: 1.5}}
    mirror: {host: reviews, subset: v1}
    mirrorPercent: 25
    corsPolicy:
      allowOrigin: ["https://a.example.com"]
      allowMethods: [GET, POST]
      maxAge: 24h
      unmatchedPreflights: IGNORE
    route:
    - {destination: {host: reviews, subset: v1}, weight: 80, headers: {response: {set: {x-v: "1"}}}}
    - {destination: {host: reviews, subset: v2}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cdn, namespace: other}
spec:
  hosts: ["*.cdn.example.com"]
  http:
  - route: [{destination: {host: api.example.com, port: {number: 443}}}]
    timeout: 1s
---
apiVersion: meshbus.io/v1
kind: LocalRateLimit
metadata: {name: reviews-limit, namespace: default}
spec:
  hosts: [reviews]
  routes: [main]
  tokenBucket: {maxTokens: 10, tokensPerFill: 5, fillInterval: 1s}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: default}
spec:
  selector: {matchLabels: {version: v2}}
  mtls: {mode: PERMISSIVE}
  portLevelMtls: {9080: {mode: DISABLE}}
"""

AUTHORITIES = [
    f"{host}{port}"
    for host in ("reviews", "reviews.default", "reviews.default.svc.cluster.local", "REVIEWS.", "ratings",
                 "api.example.com", "x.cdn.example.com", "nope")
    for port in ("", ":9080", ":9443", ":443")
]  # fmt: skip
REQUESTS = [
    {"path": "/api/x", "headers": {"x-canary": "1"}},
    {"path": "/API/Thing?canary=yes"},
    {"path": "/old/thing"},
    {"path": "/moved"},
    {"path": "/", "method": "BREW"},
    {"path": "/"},
]


def from_file(text: str) -> ProxyRuntime:
    return build_runtime(load_text(text, "mesh.yaml").raise_for_errors(), app_port=9080, version="1")


def from_worker(text: str, tmp_path: Path) -> ProxyRuntime:
    path = tmp_path / "mesh.yaml"
    path.write_text(text)
    code, payload, err = dump_config(str(path))
    assert code == 0, err
    resources, _warnings = pickle.loads(payload)
    assert all(isinstance(r, Resource) for r in resources)
    return build_runtime(resources, app_port=9080, version="1")


def from_snapshot(text: str) -> ProxyRuntime:
    entries = []
    for revision, res in enumerate(load_text(text, "mesh.yaml").raise_for_errors(), start=1):
        stored = encode_value(to_stored(res, updated="2026-12-01T00:00:00.000000Z"))
        entries.append(ConfigEntry.from_value(decode_value(stored).manifest(), revision))
    snap = Snapshot(
        version=1,
        digest="d1",
        node="n1",
        nonce="x",
        packed_resources=msgpack.Packer().pack_array_header(len(entries))
        + b"".join(e.packed for e in entries),
        digests=[e.digest for e in entries],
    )
    outcome = SnapshotApplier("n1", app_port=9080).offer(snap, now=0.0)
    assert outcome.action == "applied" and outcome.runtime is not None, outcome.ack
    return outcome.runtime


def dump(rt: ProxyRuntime) -> dict[str, Any]:
    """config_dump (lists sorted: a snapshot orders resources by key, a file as written) and routing."""
    doc = rt.config_dump(now=0.0)
    for listener in doc["listeners"].values():
        listener["virtualHosts"].sort(key=lambda vh: (vh["name"], str(vh.get("domains"))))
    doc["clusters"].sort(key=lambda c: c["name"])
    routed: dict[str, Any] = {}
    for authority in AUTHORITIES:
        for r in REQUESTS:
            route = rt.outbound.match(req(authority=authority, **r))  # type: ignore[arg-type]
            key = f"{authority} {r}"
            routed[key] = None if route is None else (route.virtual_host, route.name, route.described)
    doc["routed"] = routed
    return doc


@pytest.mark.parametrize("text", [RICH, BOOKINFO], ids=["rich", "bookinfo"])
def test_file_worker_and_snapshot_give_the_same_runtime(text: str, tmp_path: Path) -> None:
    file_rt = from_file(text)
    expected = dump(file_rt)
    assert sum(v is not None for v in expected["routed"].values()) > 10  # the comparison sees routes
    assert dump(from_worker(text, tmp_path)) == expected
    assert dump(from_snapshot(text)) == expected
    assert from_snapshot(text).tls == file_rt.tls
