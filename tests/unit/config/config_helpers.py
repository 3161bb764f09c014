"""Helpers for config tests: wrap a spec snippet in a resource and load it (imported by the tests)."""

from __future__ import annotations

import textwrap

from meshbus.bus.config import LoadResult, load_text

API = {
    "VirtualService": "networking.istio.io/v1",
    "DestinationRule": "networking.istio.io/v1",
    "Gateway": "networking.istio.io/v1",
    "ServiceEntry": "networking.istio.io/v1",
    "WorkloadEntry": "networking.istio.io/v1",
    "Sidecar": "networking.istio.io/v1",
    "PeerAuthentication": "security.istio.io/v1",
    "RequestAuthentication": "security.istio.io/v1",
    "AuthorizationPolicy": "security.istio.io/v1",
    "LocalRateLimit": "meshbus.io/v1",
    "Plugin": "meshbus.io/v1",
    "MeshConfig": "meshbus.io/v1",
}


def load_spec(kind: str, spec: str, name: str = "test") -> LoadResult:
    """Load one resource whose spec is the given YAML snippet (dedented, indented under spec:)."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    text = f"apiVersion: {API[kind]}\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{body}\n"
    return load_text(text, "t.yaml")


def errors(result: LoadResult) -> list[str]:
    return [e.render() for e in result.validation.errors]


def warnings(result: LoadResult) -> list[str]:
    return [w.render() for w in result.validation.warnings]
