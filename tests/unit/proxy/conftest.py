"""Helpers for proxy-core unit tests: real YAML through the config loader, fake clock and randomness."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from meshbus.bus.config import load_text
from meshbus.proxy.build.runtime import ProxyRuntime, build_runtime
from meshbus.proxy.core.routing import RequestView

pytestmark = pytest.mark.unit

SERVICES = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
  - {address: 10.0.0.3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.1.1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
"""


def load(text: str) -> list:
    result = load_text(text, "test.yaml")
    return result.raise_for_errors()


def build(text: str, **kw: object) -> ProxyRuntime:
    return build_runtime(load(text), **kw)  # type: ignore[arg-type]


def build_unvalidated(text: str, **kw: object) -> ProxyRuntime:
    """Resources as decoded, even when semantic validation found errors (the builder must cope)."""
    return build_runtime(load_text(text, "test.yaml").resources, **kw)  # type: ignore[arg-type]


def req(
    path: str = "/",
    authority: str = "reviews:9080",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    source_ip: str = "10.1.1.1",
    scheme: str = "http",
) -> RequestView:
    return RequestView(method, path, authority, headers or {}, source_ip, scheme)


class SeqRng:
    """Deterministic rng: returns the given values in a cycle."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.i = 0

    def __call__(self) -> float:
        v = self.values[self.i % len(self.values)]
        self.i += 1
        return v


@pytest.fixture
def seeded() -> Iterator[Callable[[], float]]:
    yield random.Random(1234).random
