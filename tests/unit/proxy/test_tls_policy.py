"""Sans-IO TLS decisions: PeerAuthentication resolution and per-cluster DestinationRule / auto-mTLS."""

from __future__ import annotations

import pytest

from meshbus.bus.config import load_text
from meshbus.bus.schemas.discovery import Register
from meshbus.control.discovery.endpoints import synthesize
from meshbus.proxy.build.runtime import build_runtime
from meshbus.proxy.mesh.snapshot_apply import ResourceCache
from meshbus.proxy.tls.policy import ISTIO_MUTUAL, InboundPolicy, PeerAuthRule, inbound_policy

pytestmark = pytest.mark.unit


def pa(name: str, ns: str, mode: str | None, selector: str = "", ports: str = "") -> str:
    sel = f"  selector: {{matchLabels: {{{selector}}}}}\n" if selector else ""
    mtls = f"  mtls: {{mode: {mode}}}\n" if mode else ""
    plm = f"  portLevelMtls: {{{ports}}}\n" if ports else ""
    return (
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
        f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n{sel}{mtls}{plm}---\n"
    )


def policy(text: str) -> InboundPolicy:
    res = load_text(text, "pa.yaml").resources
    return inbound_policy([r for r in res if r.kind == "PeerAuthentication"])


def test_default_is_permissive() -> None:
    assert InboundPolicy().mode_for(9080, "default", {}) == "PERMISSIVE"


def test_levels_mesh_namespace_workload_port() -> None:
    p = policy(
        pa("mesh", "istio-system", "STRICT")
        + pa("ns", "default", "PERMISSIVE")
        + pa("wl", "default", "STRICT", "app: reviews", "8080: {mode: DISABLE}, 9090: {mode: UNSET}")
    )
    assert p.mode_for(9080, "other", {}) == "STRICT"  # mesh-wide only
    assert p.mode_for(9080, "default", {"app": "ratings"}) == "PERMISSIVE"  # namespace overrides mesh
    assert p.mode_for(9080, "default", {"app": "reviews"}) == "STRICT"  # workload overrides namespace
    assert p.mode_for(8080, "default", {"app": "reviews"}) == "DISABLE"  # port level overrides workload
    assert p.mode_for(9090, "default", {"app": "reviews"}) == "STRICT"  # UNSET port inherits


def test_unset_inherits_and_other_namespaces_do_not_apply() -> None:
    p = policy(
        pa("mesh", "istio-system", "DISABLE")
        + pa("ns", "default", "UNSET")
        + pa("wl", "default", None, "app: reviews", "8080: {mode: STRICT}")
        + pa("foreign", "prod", "STRICT")
        + pa("foreign-wl", "prod", "STRICT", "app: reviews")
    )
    assert p.mode_for(9080, "default", {"app": "reviews"}) == "DISABLE"  # UNSET all the way up to mesh
    assert p.mode_for(8080, "default", {"app": "reviews"}) == "STRICT"
    assert p.mode_for(9080, "prod", {"app": "reviews"}) == "STRICT"


def test_root_namespace_selector_policy_only_for_root_workloads() -> None:
    p = InboundPolicy((PeerAuthRule("x", "istio-system", {"app": "gw"}, "STRICT"),))
    assert p.mode_for(80, "default", {"app": "gw"}) == "PERMISSIVE"
    assert p.mode_for(80, "istio-system", {"app": "gw"}) == "STRICT"


SE = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, ports: {http: 15006}, labels: {version: v1}, serviceAccount: reviews}
  - {address: 10.0.0.2, labels: {version: v2}, serviceAccount: reviews-v2}
  - {address: 10.0.0.3, labels: {version: v3}}
---
"""


def test_auto_mtls_per_endpoint_with_service_identities() -> None:
    rt = build_runtime(load_text(SE, "se.yaml").resources)
    ct = rt.tls.clusters["outbound|9080||reviews.default.svc.cluster.local"]
    assert ct.mode == "AUTO"
    assert ct.mode_for(("10.0.0.1", 15006)) == ISTIO_MUTUAL  # named port -> the endpoint's port
    assert ct.mode_for(("10.0.0.2", 9080)) == ISTIO_MUTUAL
    assert ct.mode_for(("10.0.0.3", 9080)) == "DISABLE"  # not a mesh workload: plaintext
    assert ct.identities == (("default", "reviews"), ("default", "reviews-v2"))
    assert "inbound|9080||" not in rt.tls.clusters


def test_destination_rule_tls_wins_over_auto_for_every_subset() -> None:
    dr = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy: {tls: {mode: DISABLE}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {tls: {mode: SIMPLE, sni: reviews.example.com}}
  - {name: v2, labels: {version: v2}}
"""
    rt = build_runtime(load_text(SE + dr, "x.yaml").resources)
    assert rt.tls.clusters["outbound|9080||reviews.default.svc.cluster.local"].mode_for(
        ("10.0.0.1", 15006)
    ) == ("DISABLE")
    v1 = rt.tls.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
    assert v1.mode == "SIMPLE" and v1.sni == "reviews.example.com"
    assert rt.tls.clusters["outbound|9080|v2|reviews.default.svc.cluster.local"].mode == "DISABLE"
    assert rt.config_dump()["tls"]["outbound|9080|v1|reviews.default.svc.cluster.local"]["mode"] == "SIMPLE"


def test_peer_authentications_reach_the_runtime() -> None:
    rt = build_runtime(load_text(SE + pa("ns", "default", "STRICT"), "x.yaml").resources, app_port=9080)
    assert rt.tls.inbound.mode_for(9080, "default", {}) == "STRICT"


def test_registry_service_entries_make_mesh_endpoints() -> None:
    """discovery's synthesized ServiceEntry carries the workload's service account: auto-mTLS applies."""
    w = Register(
        node_id="reviews-1",
        service="reviews",
        namespace="default",
        address="10.1.0.7",
        ports={"http": 9080},
        inbound_port=15006,
        service_account="reviews-sa",
    )
    entry = synthesize(("default", "reviews"), [w])
    assert entry is not None
    res = ResourceCache().get("ServiceEntry.default.mesh-registry-reviews", entry.value, "snapshot")
    rt = build_runtime([res])
    (name,) = [n for n in rt.tls.clusters if n.startswith("outbound|9080||reviews.")]
    ct = rt.tls.clusters[name]
    assert ct.mode_for(("10.1.0.7", 15006)) == ISTIO_MUTUAL
    assert ct.identities == (("default", "reviews-sa"),)


REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"


@pytest.mark.parametrize(
    "pas,want",
    [
        ("", ("ISTIO_MUTUAL", "ISTIO_MUTUAL")),
        (pa("v2-off", "default", "DISABLE", selector="version: v2"), ("ISTIO_MUTUAL", "DISABLE")),
        (pa("ns", "default", "DISABLE"), ("DISABLE", "DISABLE")),
        (pa("mesh", "istio-system", "DISABLE"), ("DISABLE", "DISABLE")),
        # portLevelMtls counts only in a policy with a selector (Istio), keyed by the workload's port
        (
            pa("w", "default", "STRICT", selector="version: v2", ports="9080: {mode: DISABLE}"),
            ("ISTIO_MUTUAL", "DISABLE"),
        ),
        (
            pa("ns", "default", "DISABLE")
            + pa("w", "default", None, selector="version: v2", ports="9080: {mode: STRICT}"),
            ("DISABLE", "ISTIO_MUTUAL"),
        ),
        (pa("other", "prod", "DISABLE"), ("ISTIO_MUTUAL", "ISTIO_MUTUAL")),  # another namespace's workloads
        (pa("ns", "default", "PERMISSIVE"), ("ISTIO_MUTUAL", "ISTIO_MUTUAL")),
    ],
    ids=[
        "none",
        "workload",
        "namespace",
        "mesh-wide",
        "port-level",
        "port-level-on",
        "other-ns",
        "permissive",
    ],
)
def test_auto_mtls_sends_plaintext_where_the_servers_peer_authentication_disables_mtls(
    pas: str, want: tuple[str, str]
) -> None:
    rt = build_runtime(load_text(pas + SE, "x.yaml").resources)
    ct = rt.tls.clusters[REVIEWS]
    assert (ct.mode_for(("10.0.0.1", 15006)), ct.mode_for(("10.0.0.2", 9080))) == want
    assert ct.mode_for(("10.0.0.3", 9080)) == "DISABLE"  # no sidecar: plaintext whatever the policy


def test_a_peer_authentication_change_alone_redecides_auto_mtls_in_an_incremental_build() -> None:
    se = load_text(SE, "se.yaml").resources
    off = load_text(pa("ns", "default", "DISABLE"), "pa.yaml").resources
    first = build_runtime(se)
    second = build_runtime([*se, *off], previous=first)
    third = build_runtime(se, previous=second)
    assert first.tls.clusters[REVIEWS].mode_for(("10.0.0.2", 9080)) == ISTIO_MUTUAL
    assert second.tls.clusters[REVIEWS].mode_for(("10.0.0.2", 9080)) == "DISABLE"
    assert third.tls.clusters[REVIEWS].mode_for(("10.0.0.2", 9080)) == ISTIO_MUTUAL
    assert second.tls.inbound.mode_for(9080, "default", {}) == "DISABLE"


def test_mesh_wide_peer_authentication_lives_in_meshconfigs_root_namespace() -> None:
    """MeshConfig ``rootNamespace`` moves the mesh-wide level, in a full build and an incremental one."""
    mesh = "apiVersion: meshbus.io/v1\nkind: MeshConfig\nmetadata: {name: mesh, namespace: mesh-root}\n"
    mesh += "spec: {rootNamespace: mesh-root}\n---\n"
    pas = load_text(
        SE + pa("old-root", "istio-system", "DISABLE") + pa("root", "mesh-root", "STRICT"), "x.yaml"
    )
    with_mesh = load_text(mesh, "m.yaml").resources
    plain = build_runtime(pas.resources, app_port=9080)
    assert plain.tls.inbound.mode_for(9080, "default", {}) == "DISABLE"
    rooted = build_runtime([*pas.resources, *with_mesh], app_port=9080, previous=plain)
    assert rooted.tls.inbound.mode_for(9080, "default", {}) == "STRICT"
    assert (
        build_runtime([*pas.resources, *with_mesh], app_port=9080).tls.inbound.root_namespace == "mesh-root"
    )
    back = build_runtime(pas.resources, app_port=9080, previous=rooted)
    assert back.tls.inbound.mode_for(9080, "default", {}) == "DISABLE"
