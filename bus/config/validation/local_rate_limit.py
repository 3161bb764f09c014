"""Semantic checks for meshbus.io LocalRateLimit."""

from __future__ import annotations

from meshbus.bus.config.resources import LocalRateLimit, Resource
from meshbus.bus.config.validation.common import check_host, check_labels
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, LocalRateLimit):
        return
    spec = resource.spec
    for i, host in enumerate(spec.hosts):
        check_host(f, ["spec", "hosts", i], host)
    for i, route in enumerate(spec.routes):
        if not route:
            f.error(["spec", "routes", i], "route name must not be empty")
    if spec.workload_selector is not None:
        check_labels(f, ["spec", "workloadSelector", "labels"], spec.workload_selector.labels)
    bucket = spec.token_bucket
    if bucket.tokens_per_fill > bucket.max_tokens:
        f.warn(
            ["spec", "tokenBucket", "tokensPerFill"],
            f"tokensPerFill is larger than maxTokens ({bucket.max_tokens}); the bucket never holds more",
            bucket.tokens_per_fill,
        )
