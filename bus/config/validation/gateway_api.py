"""Semantic checks for the Gateway API kinds (the Gateway API's CRD rules); not enforced by meshbus."""

from __future__ import annotations

from collections.abc import Sequence

from meshbus.bus.config.gateway_api import GRPCRouteRule, HTTPRouteFilter, HTTPRouteRule
from meshbus.bus.config.resources import GRPCRoute, HTTPRoute, KubernetesGateway, Resource
from meshbus.bus.config.validation.common import check_regex
from meshbus.bus.config.validation.findings import Findings

# Which field a filter of each type carries (the Gateway API's CEL rules).
_FILTER_FIELD = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestMirror": "request_mirror",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "ExtensionRef": "extension_ref",
    "CORS": "cors",
}
_L4 = ("TCP", "UDP")


def validate(resource: Resource, f: Findings) -> None:
    if isinstance(resource, KubernetesGateway):
        _gateway(resource, f)
    elif isinstance(resource, HTTPRoute):
        _rules(f, resource.spec.rules)
        for i, rule in enumerate(resource.spec.rules):
            for j, match in enumerate(rule.matches):
                p = match.path
                mpath: list[str | int] = ["spec", "rules", i, "matches", j, "path"]
                if p is None or p.value is None:
                    continue
                if p.type == "RegularExpression":
                    check_regex(f, [*mpath, "value"], p.value)
                elif not p.value.startswith("/"):
                    f.error([*mpath, "value"], 'value must be an absolute path (start with "/")', p.value)
    elif isinstance(resource, GRPCRoute):
        _rules(f, resource.spec.rules)


def _rules(f: Findings, rules: Sequence[HTTPRouteRule | GRPCRouteRule]) -> None:
    for i, rule in enumerate(rules):
        path: list[str | int] = ["spec", "rules", i]
        _filters(f, [*path, "filters"], rule.filters)
        for j, backend in enumerate(rule.backend_refs):
            _filters(f, [*path, "backendRefs", j, "filters"], backend.filters)
            if backend.port is None and backend.kind in (None, "Service") and backend.group in (None, ""):
                f.error([*path, "backendRefs", j, "port"], "port is required when the backend is a Service")


def _gateway(gw: KubernetesGateway, f: Findings) -> None:
    seen: dict[str, int] = {}
    for i, listener in enumerate(gw.spec.listeners):
        path: list[str | int] = ["spec", "listeners", i]
        if listener.name in seen:
            f.error([*path, "name"], f"Listener name must be unique (also listeners[{seen[listener.name]}])")
        seen.setdefault(listener.name, i)
        if listener.protocol in _L4 and listener.hostname is not None:
            f.error([*path, "hostname"], "hostname must not be specified for protocols ['TCP', 'UDP']")
        if listener.protocol in ("HTTPS", "TLS") and listener.tls is None:
            f.error([*path, "tls"], "tls must be specified for protocols ['HTTPS', 'TLS']")
        if listener.protocol in ("HTTP", *_L4) and listener.tls is not None:
            f.error([*path, "tls"], "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']")
        tls = listener.tls
        if (
            tls is not None
            and (tls.mode or "Terminate") == "Terminate"
            and not tls.certificate_refs
            and not tls.options
        ):
            f.error([*path, "tls"], "certificateRefs or options must be specified when mode is Terminate")


def _filters(f: Findings, path: list[str | int], filters: tuple[HTTPRouteFilter, ...]) -> None:
    for k, flt in enumerate(filters):
        want = _FILTER_FIELD[flt.type]
        for ftype, attr in _FILTER_FIELD.items():
            value = getattr(flt, attr)
            if attr == want and value is None:
                f.error([*path, k], f"filter.{_camel(attr)} must be specified for {ftype} filter.type")
            elif attr != want and value is not None:
                f.error([*path, k], f"filter.{_camel(attr)} must be nil if the filter.type is not {ftype}")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
