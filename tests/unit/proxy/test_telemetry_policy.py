"""Telemetry resources + MeshConfig -> one workload's policy: Istio's scope and precedence."""

from __future__ import annotations

import pytest

from meshbus.bus.config import load_text
from meshbus.proxy.build.telemetry_policy import DEFAULT_POLICY, build_policy

pytestmark = pytest.mark.unit

DOCS = """
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh, namespace: mesh-root}
spec:
  tracing: [{randomSamplingPercentage: 10, customTags: {team: {literal: {value: core}}}}]
  accessLogging: [{filter: {expression: "response.code >= 500"}}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: ns, namespace: shop}
spec:
  tracing:
  - match: {mode: SERVER}
    randomSamplingPercentage: 50
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE, mode: CLIENT}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing:
  - customTags:
      env: {environment: {name: STAGE, defaultValue: none}}
      tenant: {header: {name: X-Tenant}}
  accessLogging: [{match: {mode: CLIENT}, disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: elsewhere, namespace: other}
spec:
  tracing: [{randomSamplingPercentage: 99}]
---
apiVersion: meshbus.io/v1
kind: MeshConfig
metadata: {name: mesh, namespace: mesh-root}
spec:
  rootNamespace: mesh-root
  defaultProviders: {tracing: [otel]}
  extensionProviders: [{name: otel, opentelemetry: {service: collector, port: 4318}}]
"""


def resources(text: str = DOCS) -> list:  # type: ignore[type-arg]
    result = load_text(text, "t.yaml")
    assert result.validation.ok, [e.render() for e in result.validation.errors]
    return list(result.resources)


def test_root_then_namespace_then_selector_field_by_field() -> None:
    res = resources()
    p = build_policy(res, "shop", {"app": "reviews"}, env={"STAGE": "prod"})
    assert p.root_namespace == "mesh-root"
    assert p.client.tracing.sampling == 0.10 and p.server.tracing.sampling == 0.50  # mode SERVER only
    assert p.client.tracing.provider == "otel"  # the MeshConfig's default provider
    tags = dict(p.server.tracing.literal_tags)
    assert tags == {"team": "core", "env": "prod"}  # the root's tag kept, the workload's added
    assert [t.value for t in p.server.tracing.header_tags] == ["x-tenant"]
    assert not p.client.metrics[2].enabled and p.server.metrics[2].enabled  # REQUEST_SIZE, CLIENT only
    assert p.server.access_log.filter_source == "response.code >= 500" and p.server.access_log.enabled
    assert not p.client.access_log.enabled
    other = build_policy(res, "shop", {"app": "ratings"}, env={})
    assert other.server.tracing.sampling == 0.50 and other.client.access_log.enabled
    assert dict(other.server.tracing.literal_tags) == {"team": "core"}
    elsewhere = build_policy(res, "other", {}, env={})
    assert elsewhere.client.tracing.sampling == 0.99


def test_defaults_and_reuse() -> None:
    assert build_policy([], "default") is DEFAULT_POLICY
    assert DEFAULT_POLICY.client.tracing.sampling == 0.01 and DEFAULT_POLICY.server.access_log.enabled
    res = resources()
    p = build_policy(res, "shop", {}, env={})
    assert build_policy(res, "shop", {}, previous=p, env={}) is p  # the same resource objects: reused
    off = resources(
        "apiVersion: meshbus.io/v1\nkind: MeshConfig\nmetadata: {name: m, namespace: istio-system}\n"
        "spec: {enableTracing: false}\n"
    )
    assert build_policy(off, "default").client.tracing.sampling == 0.0


def test_a_cel_expression_that_does_not_compile_is_refused_with_its_field() -> None:
    result = load_text(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: default}\n"
        "spec:\n  accessLogging: [{filter: {expression: 'response.code >='}}]\n"
        "  metrics: [{overrides: [{tagOverrides: {x: {value: 'upstream_peer.labels[\"a\"]'}}}]}]\n",
        "t.yaml",
    )
    [err] = [e.render() for e in result.validation.errors]
    assert "spec.accessLogging[0].filter.expression: not a CEL expression" in err and "t.yaml" in err
    warned = [w.render() for w in result.validation.warnings]
    assert any("tagOverrides.x.value" in w and "upstream_peer" in w for w in warned), warned
