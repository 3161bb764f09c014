"""meshbus.io/v1 kinds: LocalRateLimit (token bucket per route) and Plugin (filter binding)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from meshbus.bus.config.types import Duration, IstioModel, WorkloadSelector


class TokenBucket(IstioModel):
    max_tokens: int = Field(gt=0)
    tokens_per_fill: int = Field(default=1, gt=0)
    fill_interval: Duration


class LocalRateLimitSpec(IstioModel):
    """Applies to the given VirtualService hosts / http route names; empty lists mean "all"."""

    workload_selector: WorkloadSelector | None = None
    hosts: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    token_bucket: TokenBucket


class PluginSpec(IstioModel):
    """Binds filter ``filter`` (a dotted id such as ``meshbus.filters.http.ratelimit``) to workloads/routes.

    ``config`` is not yet checked against the plugin's own config type: there is no plugin loader yet.
    """

    filter: str
    config: dict[str, Any] = Field(default_factory=dict)
    workload_selector: WorkloadSelector | None = None
    routes: tuple[str, ...] = ()
