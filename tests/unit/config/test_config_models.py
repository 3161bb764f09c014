"""Models: durations, Percent, StringMatch, aliases, immutability, kinds and api versions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from meshbus.bus.config import (
    KINDS,
    DestinationRule,
    LocalRateLimit,
    Metadata,
    Percent,
    StringMatch,
    VirtualService,
    VirtualServiceSpec,
    load_text,
    parse_duration,
)
from meshbus.bus.config.destination_rule import HTTPSettings, OutlierDetection
from meshbus.bus.config.types import format_duration
from meshbus.bus.config.virtual_service import HTTPRetry

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("100ms", 0.1),
        ("1.5s", 1.5),
        ("0.5s", 0.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("1ms", 0.001),
        ("1500us", 0.0015),
        (".5s", 0.5),
    ],
)
def test_duration_parses_to_float_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "1", "s", "1 s", "1sec", "1.2.3s", "-1s", "0s", "100us", "1d"])
def test_duration_rejects_bad_or_too_small_values(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [5, 1.5, True, None])
def test_duration_rejects_non_strings(bad: object) -> None:
    with pytest.raises(ValueError, match="string with a unit"):
        parse_duration(bad)


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1.0, 1.5, 90.0, 3600.0])
def test_duration_round_trips_through_format(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_percent_bounds() -> None:
    assert Percent(value=12.5).value == 12.5
    for bad in (-0.1, 100.1):
        with pytest.raises(ValidationError):
            Percent(value=bad)


def test_string_match_allows_one_kind_and_empty_for_presence() -> None:
    assert StringMatch(prefix="/a").kind == "prefix"
    assert StringMatch().is_empty
    with pytest.raises(ValidationError, match="set only one of exact, prefix, regex"):
        StringMatch(exact="a", regex="b")


def test_snake_case_attributes_with_istio_camel_case_aliases() -> None:
    aliases = {name: info.alias for name, info in HTTPSettings.model_fields.items()}
    assert aliases["http1_max_pending_requests"] == "http1MaxPendingRequests"
    assert aliases["max_requests_per_connection"] == "maxRequestsPerConnection"
    assert OutlierDetection.model_fields["consecutive_5xx_errors"].alias == "consecutive5xxErrors"
    assert HTTPRetry.model_fields["per_try_timeout"].alias == "perTryTimeout"


def test_models_construct_by_attribute_name_and_are_frozen() -> None:
    retry = HTTPRetry(attempts=3, per_try_timeout="2s", retry_on="5xx")
    assert retry.per_try_timeout == 2.0
    with pytest.raises(ValidationError):
        retry.attempts = 4  # type: ignore[misc]


def test_yaml_must_use_istio_names_not_python_names() -> None:
    result = load_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\n"
        "spec:\n  hosts: [r]\n  http:\n  - route: [{destination: {host: r}}]\n"
        "    retries: {per_try_timeout: 1s}\n",
        "t.yaml",
    )
    assert [e.render() for e in result.validation.errors] == [
        "t.yaml:8: VirtualService default/r: spec.http[0].retries.per_try_timeout: "
        'unknown field "per_try_timeout" (did you mean "perTryTimeout"?)'
    ]


def test_typed_spec_per_kind_for_the_proxy() -> None:
    text = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      http: {http1MaxPendingRequests: 1, maxRequestsPerConnection: 1}
      tcp: {maxConnections: 1, connectTimeout: 250ms}
    outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 3m, maxEjectionPercent: 100}
---
apiVersion: meshbus.io/v1
kind: LocalRateLimit
metadata: {name: rl, namespace: shop}
spec:
  routes: [default]
  tokenBucket: {maxTokens: 10, fillInterval: 100ms}
"""
    result = load_text(text, "t.yaml")
    assert result.ok, result.validation.render()
    dr, rl = result.resources
    assert isinstance(dr, DestinationRule) and isinstance(rl, LocalRateLimit)
    tp = dr.spec.traffic_policy
    assert tp is not None and tp.connection_pool is not None and tp.outlier_detection is not None
    assert tp.connection_pool.http is not None and tp.connection_pool.tcp is not None
    assert tp.connection_pool.http.http1_max_pending_requests == 1
    assert tp.connection_pool.tcp.connect_timeout == pytest.approx(0.25)
    assert tp.outlier_detection.consecutive_5xx_errors == 1
    assert tp.outlier_detection.base_ejection_time == 180.0
    assert rl.metadata.namespace == "shop" and dr.metadata.namespace == "default"
    assert rl.spec.token_bucket.tokens_per_fill == 1
    assert rl.spec.token_bucket.fill_interval == pytest.approx(0.1)
    assert rl.spec.hosts == () and rl.spec.routes == ("default",)


@pytest.mark.parametrize(
    ("api_version", "ok"),
    [
        ("networking.istio.io/v1", True),
        ("networking.istio.io/v1beta1", True),
        ("networking.istio.io/v1alpha3", True),
        ("networking.istio.io/v2", False),
        ("security.istio.io/v1", False),
    ],
)
def test_virtual_service_api_versions(api_version: str, ok: bool) -> None:
    text = (
        f"apiVersion: {api_version}\nkind: VirtualService\nmetadata: {{name: r}}\nspec:\n  hosts: [r]\n"
        + ("  http:\n  - route: [{destination: {host: r}}]\n")
    )
    result = load_text(text, "t.yaml")
    assert result.ok is ok
    if not ok:
        assert "apiVersion not supported for VirtualService" in result.validation.errors[0].message


def test_all_kinds_registered() -> None:
    assert set(KINDS) == {
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "Sidecar",
        "PeerAuthentication",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "LocalRateLimit",
        "RateLimit",
        "Plugin",
        "MeshConfig",
        "WorkloadGroup",
        "ProxyConfig",
        "EnvoyFilter",
        "WasmPlugin",
        "Telemetry",
        "KubernetesGateway",
        "HTTPRoute",
        "GRPCRoute",
        "TCPRoute",
        "TLSRoute",
        "ReferenceGrant",
    }


def test_resource_dump_uses_istio_names_and_omits_source() -> None:
    result = load_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r]\n"
        "  http:\n  - route: [{destination: {host: r}}]\n    timeout: 1.5s\n",
        "t.yaml",
    )
    (vs,) = result.resources
    assert isinstance(vs, VirtualService)
    dumped = vs.to_yaml_dict()
    assert "source" not in dumped
    assert dumped["apiVersion"] == "networking.istio.io/v1"
    assert dumped["spec"]["http"][0]["timeout"] == "1500ms"
    again = VirtualService.model_validate(dumped, by_alias=True, by_name=False)
    assert again == vs


def test_resources_can_be_built_in_code_with_envelope_defaults() -> None:
    vs = VirtualService(metadata=Metadata(name="r"), spec=VirtualServiceSpec(hosts=("r",)))
    assert (vs.api_version, vs.kind, vs.namespace, vs.ref) == (
        "networking.istio.io/v1",
        "VirtualService",
        "default",
        "VirtualService default/r",
    )
    assert vs.key == ("VirtualService", "default", "r")
    with pytest.raises(ValidationError, match="kind must be VirtualService"):
        VirtualService(kind="Gateway", metadata=Metadata(name="r"), spec=VirtualServiceSpec())
    with pytest.raises(ValidationError, match="apiVersion not supported for VirtualService"):
        VirtualService(api_version="meshbus.io/v1", metadata=Metadata(name="r"), spec=VirtualServiceSpec())
