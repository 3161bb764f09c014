"""Semantic checks for Telemetry (Istio's ValidateTelemetry and CRD rules), and its CEL expressions:
one that does not compile is refused (Istio leaves that to Envoy, which then drops the filter);
one that reads an attribute meshbus does not provide is warned about (it never has a value)."""

from __future__ import annotations

from meshbus.bus.config.cel import ATTRIBUTES, CelError, unknown_attributes
from meshbus.bus.config.resources import Resource, Telemetry
from meshbus.bus.config.validation.common import check_policy_spec
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, Telemetry):
        return
    spec = resource.spec
    check_policy_spec(f, spec)
    if len(spec.tracing) > 1:
        f.warn(["spec", "tracing"], "multiple tracing is not currently supported")
    for i, tracing in enumerate(spec.tracing):
        if len(tracing.providers) > 1:
            f.warn(["spec", "tracing", i, "providers"], "multiple providers is not currently supported")
        for name, tag in tracing.custom_tags.items():
            path: list[str | int] = ["spec", "tracing", i, "customTags", name]
            if not name:
                f.error(path, "tag name may not be empty")
            kinds = [
                k for k in ("literal", "environment", "header", "formatter") if getattr(tag, k) is not None
            ]
            if len(kinds) > 1:
                f.error(
                    path, f"set only one of literal, environment, header, formatter (got {', '.join(kinds)})"
                )
    for i, metrics in enumerate(spec.metrics):
        for j, override in enumerate(metrics.overrides):
            opath: list[str | int] = ["spec", "metrics", i, "overrides", j]
            match = override.match
            if match is not None and match.metric is not None and match.custom_metric is not None:
                f.error([*opath, "match"], "set only one of metric and customMetric")
            for tag_name, to in override.tag_overrides.items():
                tpath = [*opath, "tagOverrides", tag_name]
                if not tag_name:
                    f.warn(tpath, "tagOverrides.name may not be empty")
                if to.operation in (None, "UPSERT") and not to.value:
                    if to.operation == "UPSERT":
                        f.error(tpath, "value must be set when operation is UPSERT")
                elif to.operation == "REMOVE" and to.value is not None:
                    f.error(tpath, "value must not be set when operation is REMOVE")
    for i, al in enumerate(spec.access_logging):
        if al.filter is not None and al.filter.expression:
            _check_cel(f, ["spec", "accessLogging", i, "filter", "expression"], al.filter.expression)
    for i, metrics in enumerate(spec.metrics):
        for j, override in enumerate(metrics.overrides):
            for tag_name, to in override.tag_overrides.items():
                if to.operation != "REMOVE" and to.value:
                    path = ["spec", "metrics", i, "overrides", j, "tagOverrides", tag_name, "value"]
                    _check_cel(f, path, to.value)


def _check_cel(f: Findings, path: list[str | int], source: str) -> None:
    try:
        unknown = unknown_attributes(source)
    except CelError as exc:
        f.error(path, f"not a CEL expression: {exc}", source)
        return
    if unknown:
        f.warn(
            path,
            f"NOT ENFORCED — meshbus provides no attribute {', '.join(unknown)} (it has: "
            f"{', '.join(sorted(ATTRIBUTES))}); the expression never has a value",
            source,
        )
