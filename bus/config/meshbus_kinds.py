"""meshbus.io/v1 kinds: LocalRateLimit (token bucket per route) and Plugin (a filter bound to workloads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from meshbus.bus.config.types import Duration, IstioModel, PolicySelector, WorkloadSelector

DEFAULT_ROOT_NAMESPACE = "istio-system"
"""MeshConfig's rootNamespace when no MeshConfig sets one (Istio's default)."""


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


class PluginPort(IstioModel):
    number: int = Field(ge=1, le=65535)


class PluginMatch(IstioModel):
    """WasmPlugin's TrafficSelector. Its own model, so a proxy worker need not import the Istio
    extension kinds (bus/config/proxy_kinds.py)."""

    mode: Literal["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"] | None = None
    ports: tuple[PluginPort, ...] = ()


PluginPhase = Literal["UNSPECIFIED", "UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]


class PluginSpec(IstioModel):
    """Runs filter ``filter`` (a ``meshbus.filters`` entry-point name, or the name a
    ``meshbus-filter-host`` serves) in the proxies of the workloads ``selector`` picks.

    Field names and meanings are Istio WasmPlugin's where they mean the same thing: ``selector``
    (none: every workload of the namespace; in the root namespace: every workload of the mesh),
    ``phase`` and ``priority`` (order in the filter chain), ``failStrategy``, ``match`` (CLIENT:
    the workload's outbound requests, SERVER: its inbound ones, optionally by port) and
    ``pluginConfig`` (checked against the filter's Config, or a remote host's published schema, when
    the Plugin is applied). ``placement`` says where it runs: in the proxy (IN_PROCESS) or in a
    ``meshbus-filter-host`` reached over NATS (REMOTE). ``timeout`` is each hook call's budget.
    """

    selector: PolicySelector | None = None
    filter: str = Field(min_length=1, max_length=253)
    placement: Literal["IN_PROCESS", "REMOTE"] = "IN_PROCESS"
    phase: PluginPhase = "UNSPECIFIED"
    priority: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    fail_strategy: Literal["FAIL_CLOSE", "FAIL_OPEN"] = "FAIL_CLOSE"
    match: tuple[PluginMatch, ...] = ()
    plugin_config: dict[str, Any] | None = None
    timeout: Duration = 1.0

    def applies(self, direction: str, port: int | None) -> bool:
        """Whether the filter runs on a listener: ``direction`` ``outbound`` (CLIENT) or ``inbound``
        (SERVER), for requests on ``port`` (outbound: the service port; inbound: the app port)."""
        if not self.match:
            return True
        mode = "CLIENT" if direction == "outbound" else "SERVER"
        for sel in self.match:
            if sel.mode not in (None, "UNDEFINED", "CLIENT_AND_SERVER", mode):
                continue
            if not sel.ports or (port is not None and any(p.number == port for p in sel.ports)):
                return True
        return False


def plugin_selects(
    plugin_namespace: str,
    spec: PluginSpec,
    namespace: str,
    labels: Mapping[str, str],
    root_namespace: str = DEFAULT_ROOT_NAMESPACE,
) -> bool:
    """Whether a Plugin in ``plugin_namespace`` applies to a workload in ``namespace`` with ``labels``:
    same namespace or the root namespace (MeshConfig ``rootNamespace``), and every selector label."""
    if plugin_namespace not in (namespace, root_namespace):
        return False
    wanted = spec.selector.match_labels if spec.selector is not None else {}
    return all(labels.get(k) == v for k, v in wanted.items())
