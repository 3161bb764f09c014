"""Workload descriptions for Istio's labels, and the peer header the sidecars exchange."""

from __future__ import annotations

import pytest

from meshbus.telemetry.peer import UNKNOWN_WORKLOAD, Workload, believed, spiffe_parts, workload_name

pytestmark = pytest.mark.unit


def test_istio_label_rules() -> None:
    w = Workload.of("reviews", "default", {"app": "reviews", "version": "v2"}, "reviews")
    assert (w.name, w.app, w.version, w.canonical_service, w.canonical_revision) == (
        "reviews-v2", "reviews", "v2", "reviews", "v2",
    )  # fmt: skip
    bare = Workload.of("ratings", "shop", {})
    assert (bare.name, bare.app, bare.version, bare.canonical_revision) == (
        "ratings",
        "unknown",
        "unknown",
        "latest",
    )
    named = Workload.of(
        "x", "ns", {"meshbus.io/workload": "x-canary", "service.istio.io/canonical-name": "xs"}
    )
    assert named.name == "x-canary" and named.canonical_service == "xs"
    assert workload_name("", {"app": "a", "version": "v1"}) == "a-v1"


def test_the_header_round_trips_and_refuses_what_it_does_not_know() -> None:
    w = Workload.of("productpage", "default", {"app": "productpage", "version": "v1"}, "bookinfo-productpage")
    assert Workload.from_header(w.header_value()) == w
    assert Workload.from_header("2;a;b;c;d;e;f;g;h") is None  # another version
    assert Workload.from_header("1;a;b") is None
    assert Workload.from_header("1;a b;c;d;e;f;g;h;i") is None  # not a label value
    assert Workload.of("we;ird", "ns", {}).name == "we_ird"  # never breaks the format


def test_mtls_identity_decides_whether_the_header_is_believed() -> None:
    w = Workload.of("productpage", "default", {"app": "productpage"}, "productpage")
    ok = "spiffe://cluster.local/ns/default/sa/productpage"
    assert believed(w, ok) is w
    liar = believed(w, "spiffe://cluster.local/ns/default/sa/ratings")  # the certificate says otherwise
    assert (liar.name, liar.namespace, liar.service_account) == ("unknown", "default", "ratings")
    assert believed(w, None) is w  # plaintext: taken as sent, as Istio does
    assert believed(None, None) is UNKNOWN_WORKLOAD
    assert believed(None, ok).service_account == "productpage"
    assert spiffe_parts(ok) == ("cluster.local", "default", "productpage") and spiffe_parts("x") is None
    assert w.principal("cluster.local") == ok
