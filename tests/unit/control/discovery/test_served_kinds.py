"""Discovery models only the kinds the proxy acts on: kinds meshbus accepts without enforcing them
(EnvoyFilter, the Gateway API's Gateway, ...) never reach a proxy."""

from __future__ import annotations

import pytest

from meshbus.control.discovery.model import served

from .helpers import manifest

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("networking.istio.io/v1", "VirtualService", True),
        ("networking.istio.io/v1", "Gateway", True),
        ("security.istio.io/v1", "AuthorizationPolicy", True),
        ("meshbus.io/v1", "LocalRateLimit", True),
        ("gateway.networking.k8s.io/v1", "Gateway", False),  # same kind name, another group
        ("gateway.networking.k8s.io/v1", "HTTPRoute", False),
        ("networking.istio.io/v1alpha3", "EnvoyFilter", False),
        ("extensions.istio.io/v1alpha1", "WasmPlugin", False),
        ("telemetry.istio.io/v1", "Telemetry", True),
        ("meshbus.io/v1", "MeshConfig", True),
        ("networking.istio.io/v1", "WorkloadGroup", False),
    ],
)
def test_served(api_version: str, kind: str, expected: bool) -> None:
    value = {**manifest(kind, "x", {}), "apiVersion": api_version}
    assert served(value) is expected
