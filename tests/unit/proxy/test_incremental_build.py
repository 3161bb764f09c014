"""Incremental build_runtime (previous= reuses unchanged pieces) == a build from scratch, and reuse happens.

Resources go through the agent's `ResourceCache`, as in mesh mode: an unchanged resource is the same
object in the next snapshot, a changed one a new object. Random sequences of changes (hypothesis)
over services, rules, routes, rate limits, PeerAuthentications, an AuthorizationPolicy and the
MeshConfig compare config_dump() of the incremental runtime with a from-scratch one after every step.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshbus.proxy.build.runtime import ProxyRuntime, RuntimeBuildError, build_runtime
from meshbus.proxy.mesh.snapshot_apply import ResourceCache, resource_key
from tests.unit.proxy.conftest import req

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]

HOSTS = ("h0", "h1", "h2", "h3")
NET = "networking.istio.io/v1"


def _meta(name: str, ns: str = "default") -> dict[str, Any]:
    return {"name": name, "namespace": ns}


def service_entry(host: str, variant: int, name: str | None = None) -> dict[str, Any]:
    ports = [
        [{"number": 9080, "name": "http", "protocol": "HTTP"}],
        [
            {"number": 9080, "name": "http", "protocol": "HTTP"},
            {"number": 9090, "name": "grpc", "protocol": "GRPC"},
        ],
        [
            {"number": 80, "name": "http", "protocol": "HTTP"},
            {"number": 9080, "name": "http-alt", "protocol": "HTTP"},
        ],
    ][variant % 3]
    n_eps = variant % 4
    eps = []
    for k in range(n_eps):
        ep: dict[str, Any] = {"address": f"10.0.{variant}.{k}", "labels": {"version": f"v{1 + k % 2}"}}
        if (variant + k) % 2:
            ep["serviceAccount"] = f"sa-{host}"
        eps.append(ep)
    spec = {
        "hosts": [host],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "ports": ports,
        "endpoints": eps,
    }
    return {"apiVersion": NET, "kind": "ServiceEntry", "metadata": _meta(name or f"se-{host}"), "spec": spec}


def destination_rule(host: str, variant: int) -> dict[str, Any]:
    policy: dict[str, Any] = [
        {},
        {"loadBalancer": {"simple": "ROUND_ROBIN"}, "tls": {"mode": "ISTIO_MUTUAL"}},
        {"connectionPool": {"http": {"http1MaxPendingRequests": 7}}, "tls": {"mode": "DISABLE"}},
        {"outlierDetection": {"consecutive5xxErrors": 3}},
    ][variant % 4]
    subsets = [{"name": "v1", "labels": {"version": "v1"}}]
    if variant % 2:
        subsets.append(
            {
                "name": "v2",
                "labels": {"version": "v2"},
                "trafficPolicy": {"loadBalancer": {"simple": "RANDOM"}},
            }
        )
    spec: dict[str, Any] = {"host": host, "subsets": subsets}
    if policy:
        spec["trafficPolicy"] = policy
    name = "dr-wild" if host.startswith("*") else f"dr-{host}"
    return {"apiVersion": NET, "kind": "DestinationRule", "metadata": _meta(name), "spec": spec}


def virtual_service(slot: int, variant: int) -> dict[str, Any]:
    own, next_ = HOSTS[slot % 4], HOSTS[(slot + 1) % 4]
    choices = [[own], [own, next_], ["*.default.svc.cluster.local"], ["ext.example.com", next_]]
    hosts = choices[variant % 4 if slot == 4 else variant % 2]
    target = HOSTS[(slot + variant) % 4]
    route: list[dict[str, Any]] = [
        {"destination": {"host": target, "port": {"number": 9080}}, "weight": 60 + variant}
    ]
    if variant % 2:
        route.append(
            {
                "destination": {"host": HOSTS[slot % 4], "subset": "v1", "port": {"number": 9080}},
                "weight": 40 - variant,
            }
        )
    http: list[dict[str, Any]] = [{"name": f"r{variant}", "route": route, "timeout": f"{1 + variant}s"}]
    if variant % 3 == 2:
        http.insert(
            0,
            {
                "match": [{"uri": {"prefix": "/api"}}],
                "route": [{"destination": {"host": target, "port": {"number": 9080}}}],
            },
        )
    return {
        "apiVersion": NET,
        "kind": "VirtualService",
        "metadata": _meta(f"vs-{slot}"),
        "spec": {"hosts": hosts, "http": http},
    }


def rate_limit(variant: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"tokenBucket": {"maxTokens": 1 + variant, "fillInterval": "1s"}}
    if variant % 2:
        spec["hosts"] = [HOSTS[variant % 4]]
    return {"apiVersion": "meshbus.io/v1", "kind": "LocalRateLimit", "metadata": _meta("rl"), "spec": spec}


def peer_auth(variant: int) -> dict[str, Any]:
    mode = ("STRICT", "PERMISSIVE", "DISABLE")[variant % 3]
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": _meta("default"),
        "spec": {"mtls": {"mode": mode}},
    }


def authorization_policy(variant: int) -> dict[str, Any]:
    action = ("ALLOW", "DENY", "AUDIT")[variant % 3]
    spec = {"action": action, "rules": [{"to": [{"operation": {"paths": [f"/p{variant}"]}}]}]}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": _meta("ap"),
        "spec": spec,
    }


def mesh_config(variant: int) -> dict[str, Any]:
    norm = ("BASE", "MERGE_SLASHES", "NONE")[variant % 3]
    spec = {"pathNormalization": {"normalization": norm}}
    return {
        "apiVersion": "meshbus.io/v1",
        "kind": "MeshConfig",
        "metadata": _meta("mesh", "istio-system"),
        "spec": spec,
    }


# slot -> value for a variant (None: the resource is absent)
SLOTS: dict[str, Any] = {
    **{f"se-{h}": (lambda v, h=h: service_entry(h, v)) for h in HOSTS},
    "se-dup": lambda v: service_entry(HOSTS[v % 4], v + 1, name="se-dup"),
    **{f"dr-{h}": (lambda v, h=h: destination_rule(h, v)) for h in HOSTS},
    "dr-wild": lambda v: destination_rule("*.default.svc.cluster.local", v),
    **{f"vs-{i}": (lambda v, i=i: virtual_service(i, v)) for i in range(5)},
    "rl": rate_limit,
    "pa": peer_auth,
    "ap": authorization_policy,  # the inbound route's authorization follows these two
    "mc": mesh_config,
}
NAMES = sorted(SLOTS)
OPTIONAL = {"se-dup", "dr-wild", "vs-1", "vs-2", "vs-4", "rl", "pa", "ap", "mc"}

changes = st.lists(
    st.tuples(st.sampled_from(NAMES), st.one_of(st.none(), st.integers(0, 5))), min_size=1, max_size=12
)


def typed(cache: ResourceCache, values: dict[str, dict[str, Any]]) -> list[Any]:
    keyed = {resource_key(v): v for v in values.values()}
    return [cache.get(k, v, "test") for k, v in sorted(keyed.items())]


AUTHORITIES = [
    f"{a}{p}"
    for h in (*HOSTS, "ext", "nope")
    for a in (h, f"{h}.default", f"{h}.default.svc.cluster.local", f"{h}.example.com")
    for p in ("", ":80", ":8080", ":9080", ":9090")
]


def dump(rt: ProxyRuntime) -> dict[str, Any]:
    """config_dump plus where each authority is routed (the authority index is not in the dump)."""
    routed = {}
    for authority in AUTHORITIES:
        for path in ("/", "/api/x"):
            route = rt.outbound.match(req(authority=authority, path=path))
            routed[f"{authority}{path}"] = None if route is None else (route.virtual_host, route.described)
    return {**rt.config_dump(now=0.0), "routed": routed}


def attempt(resources: list[Any], previous: ProxyRuntime | None) -> ProxyRuntime | str:
    try:
        return build_runtime(resources, namespace="default", app_port=9080, version="v", previous=previous)
    except RuntimeBuildError as exc:
        return str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.lists(st.integers(0, 5), min_size=len(NAMES), max_size=len(NAMES)), steps=changes)
def test_incremental_build_equals_full_build(initial: list[int], steps: list[tuple[str, int | None]]) -> None:
    cache = ResourceCache()
    values = {n: SLOTS[n](v) for n, v in zip(NAMES, initial, strict=True) if n not in OPTIONAL or v % 2}
    current = attempt(typed(cache, values), None)
    for name, variant in steps:
        if variant is None:
            values.pop(name, None)
        else:
            values[name] = SLOTS[name](variant)
        resources = typed(cache, values)
        incremental = attempt(resources, current if isinstance(current, ProxyRuntime) else None)
        scratch = attempt(resources, None)
        if isinstance(scratch, str):
            assert incremental == scratch  # the same error, word for word
            continue  # a refused config never replaces the running one
        assert isinstance(incremental, ProxyRuntime), incremental
        assert dump(incremental) == dump(scratch)
        assert incremental.tls == scratch.tls
        assert list(incremental.clusters) == list(scratch.clusters)
        current = incremental


def _fleet(n: int) -> dict[str, dict[str, Any]]:
    hosts = [f"s{i}" for i in range(n)]
    values: dict[str, dict[str, Any]] = {}
    for h in hosts:
        values[f"se-{h}"] = service_entry(h, 1)
        values[f"dr-{h}"] = destination_rule(h, 1)
        vs = virtual_service(0, 1)
        vs["metadata"]["name"] = f"vs-{h}"
        vs["spec"]["hosts"] = [h]
        for r in vs["spec"]["http"][0]["route"]:
            r["destination"]["host"] = h
        values[f"vs-{h}"] = vs
    return values


def test_one_changed_virtual_service_recompiles_one_host_only() -> None:
    cache = ResourceCache()
    values = _fleet(20)
    first = build_runtime(typed(cache, values), app_port=9080)
    assert first.memo is not None and first.memo.stats["hosts_reused"] == 0
    values["vs-s3"] = copy.deepcopy(values["vs-s3"])  # a new value, as a decoded snapshot would be
    values["vs-s3"]["spec"]["http"][0]["timeout"] = "9s"
    second = build_runtime(typed(cache, values), app_port=9080, previous=first)
    stats = second.memo.stats if second.memo is not None else {}
    ports_per_host = 2  # service_entry variant 1 declares 9080 and 9090
    assert stats["hosts_compiled"] == ports_per_host
    assert stats["hosts_reused"] == 19 * ports_per_host
    assert stats["clusters_built"] == 0  # the route changed, no cluster did
    assert second.outbound.virtual_hosts[0] is first.outbound.virtual_hosts[0]
    route = second.outbound.virtual_host_for("s3:9080")
    assert route is not None and route.routes[0].timeout == 9.0
    assert dump(second) == dump(build_runtime(typed(cache, values), app_port=9080))


def test_changed_service_rebuilds_its_clusters_and_the_routes_that_resolve_it() -> None:
    cache = ResourceCache()
    values = _fleet(5)
    first = build_runtime(typed(cache, values), app_port=9080)
    values["se-s2"] = service_entry("s2", 5)  # other endpoints, other ports
    second = build_runtime(typed(cache, values), app_port=9080, previous=first)
    stats = second.memo.stats if second.memo is not None else {}
    assert stats["hosts_compiled"] == 2  # s2's virtual hosts: its routes resolve s2
    assert stats["clusters_reused"] == 4 * 2 * 3 + 1  # 4 other services x 2 ports x 3 subsets, inbound
    assert dump(second) == dump(build_runtime(typed(cache, values), app_port=9080))


def test_reused_cluster_keeps_endpoint_health_and_breaker() -> None:
    cache = ResourceCache()
    values = _fleet(3)
    first = build_runtime(typed(cache, values), app_port=9080)
    name = "outbound|9080||s1.default.svc.cluster.local"
    ep = first.clusters[name].endpoints[0]
    ep.ejected_until = 50.0
    values["vs-s0"] = virtual_service(0, 2)
    second = build_runtime(typed(cache, values), app_port=9080, previous=first)
    assert second.clusters[name].endpoints[0] is ep and ep.ejected_until == 50.0
    assert second.clusters[name].breaker is first.clusters[name].breaker


def test_no_reuse_for_another_namespace_or_rng_or_fresh_objects() -> None:
    cache = ResourceCache()
    values = _fleet(3)
    resources = typed(cache, values)
    first = build_runtime(resources, app_port=9080)
    other_ns = build_runtime(resources, app_port=9080, namespace="other", previous=first)
    assert other_ns.memo is not None and other_ns.memo.stats["hosts_reused"] == 0
    other_rng = build_runtime(resources, app_port=9080, previous=first, rng=lambda: 0.5)
    assert other_rng.memo is not None and other_rng.memo.stats["clusters_reused"] == 0
    fresh = typed(ResourceCache(), {k: dict(v) for k, v in values.items()})
    again = build_runtime(fresh, app_port=9080, previous=first)
    assert again.memo is not None and again.memo.stats["hosts_reused"] == 0
    assert dump(again) == dump(first)
    without_memo = build_runtime(resources, app_port=9080, previous=dataclasses.replace(first, memo=None))
    assert dump(without_memo) == dump(first)


def _snapshot(
    version: int, values: list[dict[str, Any]], *, base: int = 0, removed: tuple[str, ...] = ()
) -> Any:
    import msgpack

    from meshbus.bus.schemas.discovery import Snapshot

    return Snapshot(
        version=version,
        digest=f"d{version}",
        node="n",
        nonce=f"n{version}",
        packed_resources=msgpack.packb(values),
        digests=[f"{resource_key(v)}@{v['spec']}" for v in values],  # any content digest will do
        delta=bool(base),
        base_version=base,
        removed=list(removed),
    )


def test_applier_delta_validates_and_recompiles_only_the_change() -> None:
    from meshbus.proxy.mesh.snapshot_apply import SnapshotApplier

    values = _fleet(10)
    applier = SnapshotApplier("n", app_port=9080)
    assert applier.offer(_snapshot(1, list(values.values())), now=0).action == "applied"
    validated = applier.cache.validations
    changed = copy.deepcopy(values["vs-s4"])
    changed["spec"]["http"][0]["route"][0]["weight"] = 30
    changed["spec"]["http"][0]["route"][1]["weight"] = 70
    out = applier.offer(_snapshot(2, [changed], base=1), now=0)
    assert out.action == "applied" and out.runtime is not None and out.runtime.memo is not None
    assert applier.cache.validations == validated + 1
    assert out.runtime.memo.stats.get("patched") == 1 and out.runtime.memo.stats["hosts_compiled"] == 2
    values["vs-s4"] = changed
    fresh = SnapshotApplier("n", app_port=9080)
    full = fresh.offer(_snapshot(2, list(values.values())), now=0).runtime
    assert full is not None and dump(out.runtime) == dump(full)
    # A delta that removes a resource takes the general path, with the same result as a full snapshot.
    out3 = applier.offer(_snapshot(3, [], base=2, removed=("VirtualService.default.vs-s4",)), now=0)
    del values["vs-s4"]
    full3 = SnapshotApplier("n", app_port=9080).offer(_snapshot(3, list(values.values())), now=0).runtime
    assert out3.runtime is not None and full3 is not None and dump(out3.runtime) == dump(full3)


def _routing_vs(name: str, hosts: list[str], target: str, timeout: str) -> dict[str, Any]:
    http = [
        {
            "route": [{"destination": {"host": target, "subset": "v1", "port": {"number": 9080}}}],
            "timeout": timeout,
        }
    ]
    return {
        "apiVersion": NET,
        "kind": "VirtualService",
        "metadata": _meta(name),
        "spec": {"hosts": hosts, "http": http},
    }


@pytest.mark.parametrize(
    ("before", "after"),
    [
        # vs-a (earlier in key order) gives up s1: vs-s1, unchanged, takes it over
        (["s0", "s1"], ["s0"]),
        # vs-a takes s1 from vs-s1 (it comes first)
        (["s0"], ["s0", "s1"]),
        # two hosts only vs-a routes, both re-routed by one change
        (["s2", "s3"], ["s3", "s2"]),
        # a wildcard comes or goes: it routes every service no VirtualService names (s2, s3)
        (["s0"], ["*.default.svc.cluster.local"]),
        (["*.default.svc.cluster.local"], ["s0"]),
        (["*.default.svc.cluster.local"], ["*.svc.cluster.local"]),
    ],
)
def test_replaced_virtual_service_moves_hosts_like_a_full_build(before: list[str], after: list[str]) -> None:
    cache = ResourceCache()
    values = _fleet(4)
    del values["vs-s2"], values["vs-s3"]
    values["vs-a"] = _routing_vs("vs-a", before, "s0", "1s")
    first = build_runtime(typed(cache, values), app_port=9080)
    values["vs-a"] = _routing_vs("vs-a", after, "s1", "3s")
    second = build_runtime(typed(cache, values), app_port=9080, previous=first)
    assert dump(second) == dump(build_runtime(typed(cache, values), app_port=9080))
    if before == ["s2", "s3"]:
        assert second.memo is not None and second.memo.stats.get("patched") == 1
        assert second.memo.stats["hosts_compiled"] == 4  # s2 and s3, two ports each


def test_refused_build_leaves_running_breaker_limits_and_labels_alone() -> None:
    cache = ResourceCache()
    values = _fleet(2)
    values["dr-s0"] = destination_rule("s0", 2)  # http1MaxPendingRequests: 7
    values["dr-s0"]["spec"]["host"] = "s0"
    first = build_runtime(typed(cache, values), app_port=9080)
    cluster = first.clusters["outbound|9080||s0.default.svc.cluster.local"]
    assert cluster.breaker.max_pending == 7
    labels = dict(cluster.endpoints[0].labels)
    values["dr-s0"] = destination_rule("s0", 0)  # no connection pool: default limits
    values["dr-s0"]["spec"]["host"] = "s0"
    values["se-s0"] = copy.deepcopy(values["se-s0"])
    values["se-s0"]["spec"]["endpoints"][0]["labels"] = {"version": "v9"}
    values["vs-s1"] = _routing_vs("vs-s1", ["s1"], "s1", "1s")
    values["vs-s1"]["spec"]["http"][0]["route"][0]["destination"]["subset"] = "nope"
    with pytest.raises(RuntimeBuildError):
        build_runtime(typed(cache, values), app_port=9080, previous=first)
    assert cluster.breaker.max_pending == 7 and dict(cluster.endpoints[0].labels) == labels
    del values["vs-s1"]
    second = build_runtime(typed(cache, values), app_port=9080, previous=first)
    assert second.clusters[cluster.name].breaker is cluster.breaker and cluster.breaker.max_pending != 7
    assert dict(cluster.endpoints[0].labels) == {"version": "v9"}
