"""meshbus.bus.config: the operator config schema (Istio kinds + meshbus.io kinds), loader and validator.

Layers, bottom up:
- ``types`` and one model module per kind family (``virtual_service``, ``destination_rule``, ``gateway``,
  ``service_entry``, ``sidecar``, ``security``, ``meshbus_kinds``; and the kinds meshbus validates without
  running them: ``extensions``, ``telemetry``, ``workload_group``, ``gateway_api``): strict frozen pydantic models,
  snake_case attributes with Istio's camelCase YAML names as aliases, durations as float seconds.
  Every field Istio defines is declared (an unknown field is an error); the models say nothing about
  whether meshbus acts on a field.
- ``fates``: the one table that does. Every kind and every field has one of three fates: ENFORCED
  (the proxy or discovery acts on it), NOT_ENFORCED (accepted, and warned about in the same words by
  ``meshctl apply``, ``meshctl analyze`` and the proxy's log: ``NOT ENFORCED — <what it means>``), or
  REFUSED (an error). tests/unit/config/test_fates.py fails when a model field has no fate; whoever
  makes proxy/ or control/discovery act on a field marks it ENFORCED there, in the same change.
- ``resources``: the envelope (apiVersion, kind, metadata, spec, source) and the KINDS table (kinds are
  looked up by API group and kind). ``kubernetes``: the other Kubernetes documents of a file, skipped by the
  loader and kept for the analyzers.
- ``yaml_source`` + ``loader``: YAML text -> resources, with file:line for every field. Every problem
  is collected (syntax, envelope, schema, semantics); after schema errors the loader drops the bad
  fields and still runs the semantic checks on the rest, mapping paths back to the operator's indices.
- ``validation/``: one semantic validator module per kind, looked up by ``validation.registry``,
  which runs the fates first.
- ``analysis``: cross-resource checks with istioctl-analyze codes over a set of resources.

Data flow: text -> parse_documents -> Document(data, field_lines) -> Resource (or FieldErrors) ->
validate -> LoadResult(resources, validation). Pure functions, no I/O beyond reading the given files.

Used by the proxy (its builders take these models, from a file or a snapshot), control/config
(before storing), control/discovery (it reads stored values through them) and meshctl analyze, so it
is the wire schema of config and snapshots. Keep in sync with shared/reference/ecosystem.md section 1.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshbus.bus.config.analysis import analyze
    from meshbus.bus.config.destination_rule import DestinationRuleSpec, Subset, TrafficPolicy
    from meshbus.bus.config.loader import LoadResult, load_path, load_text
    from meshbus.bus.config.mesh_config import MeshConfigSpec
    from meshbus.bus.config.meshbus_kinds import LocalRateLimitSpec, PluginSpec, TokenBucket
    from meshbus.bus.config.rate_limit import RateLimitSpec
    from meshbus.bus.config.resources import (
        KINDS,
        AuthorizationPolicy,
        DestinationRule,
        Gateway,
        LocalRateLimit,
        MeshConfig,
        Metadata,
        PeerAuthentication,
        Plugin,
        RateLimit,
        RequestAuthentication,
        Resource,
        ServiceEntry,
        Sidecar,
        VirtualService,
        WorkloadEntry,
    )
    from meshbus.bus.config.result import ConfigError, FieldError, Level, LoadError, Validation
    from meshbus.bus.config.service_entry import ServiceEntrySpec, WorkloadEntrySpec
    from meshbus.bus.config.source import Source
    from meshbus.bus.config.types import Duration, IntOrString, Percent, StringMatch, parse_duration
    from meshbus.bus.config.virtual_service import HTTPRoute, VirtualServiceSpec

# Resolved on first use (PEP 562): the proxy's workers unpickle the models (and `source.Source`) and must
# be able to import their modules without loading the YAML loader (ruamel) through this package.
_LAZY = {
    "AuthorizationPolicy": "resources",
    "ConfigError": "result",
    "DestinationRule": "resources",
    "DestinationRuleSpec": "destination_rule",
    "Duration": "types",
    "FieldError": "result",
    "Gateway": "resources",
    "HTTPRoute": "virtual_service",
    "IntOrString": "types",
    "KINDS": "resources",
    "Level": "result",
    "LoadError": "result",
    "LoadResult": "loader",
    "LocalRateLimit": "resources",
    "LocalRateLimitSpec": "meshbus_kinds",
    "MeshConfig": "resources",
    "MeshConfigSpec": "mesh_config",
    "Metadata": "resources",
    "PeerAuthentication": "resources",
    "Percent": "types",
    "Plugin": "resources",
    "RateLimit": "resources",
    "RateLimitSpec": "rate_limit",
    "PluginSpec": "meshbus_kinds",
    "RequestAuthentication": "resources",
    "Resource": "resources",
    "ServiceEntry": "resources",
    "ServiceEntrySpec": "service_entry",
    "Sidecar": "resources",
    "Source": "source",
    "StringMatch": "types",
    "Subset": "destination_rule",
    "TokenBucket": "meshbus_kinds",
    "TrafficPolicy": "destination_rule",
    "Validation": "result",
    "VirtualService": "resources",
    "VirtualServiceSpec": "virtual_service",
    "WorkloadEntry": "resources",
    "WorkloadEntrySpec": "service_entry",
    "analyze": "analysis",
    "load_path": "loader",
    "load_text": "loader",
    "parse_duration": "types",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "ConfigError",
    "DestinationRule",
    "DestinationRuleSpec",
    "Duration",
    "FieldError",
    "Gateway",
    "HTTPRoute",
    "IntOrString",
    "Level",
    "LoadError",
    "LoadResult",
    "LocalRateLimit",
    "LocalRateLimitSpec",
    "MeshConfig",
    "MeshConfigSpec",
    "Metadata",
    "PeerAuthentication",
    "Percent",
    "Plugin",
    "PluginSpec",
    "RateLimit",
    "RateLimitSpec",
    "RequestAuthentication",
    "Resource",
    "ServiceEntry",
    "ServiceEntrySpec",
    "Sidecar",
    "Source",
    "StringMatch",
    "Subset",
    "TokenBucket",
    "TrafficPolicy",
    "Validation",
    "VirtualService",
    "VirtualServiceSpec",
    "WorkloadEntry",
    "WorkloadEntrySpec",
    "analyze",
    "load_path",
    "load_text",
    "parse_duration",
]
