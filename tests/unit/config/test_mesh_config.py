"""meshbus.io/v1 MeshConfig: Istio's mesh config fields, validated strictly."""

from __future__ import annotations

import pytest

from tests.unit.config.config_helpers import errors, load_spec

pytestmark = pytest.mark.timeout(10)


def test_defaults_follow_istio() -> None:
    res = load_spec("MeshConfig", "{}")
    assert res.ok, errors(res)
    spec = res.resources[0].spec
    assert spec.root_namespace == "istio-system"
    assert spec.extension_providers == ()


def test_providers_are_typed_and_found_by_name() -> None:
    res = load_spec(
        "MeshConfig",
        """
        rootNamespace: mesh-root
        pathNormalization: {normalization: MERGE_SLASHES}
        defaultConfig: {gatewayTopology: {numTrustedProxies: 2}}
        extensionProviders:
        - name: opa
          envoyExtAuthzHttp: {service: opa.default.svc.cluster.local, port: 8181, failOpen: true,
                              includeRequestHeadersInCheck: [x-user]}
        - name: otel
          opentelemetry: {service: collector.observability, port: 4318}
        """,
    )
    assert res.ok, errors(res)
    spec = res.resources[0].spec
    assert spec.path_normalization.normalization == "MERGE_SLASHES"
    assert spec.default_config.gateway_topology.num_trusted_proxies == 2
    opa = spec.provider("opa")
    assert opa is not None and opa.envoy_ext_authz_http.fail_open is True
    assert spec.provider("otel").opentelemetry.port == 4318
    assert spec.provider("missing") is None


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("extensionProviders: [{name: a}]", "exactly one provider type"),
        (
            "extensionProviders: [{name: a, prometheus: {}, opentelemetry: {service: c, port: 1}}]",
            "exactly one provider type",
        ),
        ("extensionProviders: [{name: a, prometheus: {}}, {name: a, prometheus: {}}]", "used twice"),
        ("pathNormalization: {normalization: SOMETIMES}", "normalization"),
        ("defaultConfig: {gatewayTopology: {numTrustedProxies: -1}}", "numTrustedProxies"),
        ("meshNetworks: {}", "meshNetworks"),
    ],
)
def test_bad_mesh_config_is_refused_naming_the_field(spec: str, needle: str) -> None:
    res = load_spec("MeshConfig", spec)
    assert not res.ok
    assert any(needle in str(e) for e in errors(res)), errors(res)
