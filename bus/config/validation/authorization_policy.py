"""Semantic checks for AuthorizationPolicy (action/provider, rule fields, when keys)."""

from __future__ import annotations

import ipaddress
import re

from meshbus.bus.config.resources import AuthorizationPolicy, Resource
from meshbus.bus.config.security import Operation, Source
from meshbus.bus.config.validation.common import check_labels
from meshbus.bus.config.validation.findings import Findings

# Istio conditions (istio.io docs/reference/config/security/conditions).
_WHEN_EXACT = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_WHEN_PATTERN = re.compile(
    r"^(request\.headers\[[^\]]+\]|request\.auth\.claims\[[^\]]+\](\[[^\]]+\])*|experimental\.envoy\.filters\..+)$"
)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_IP_FIELDS = ("ip_blocks", "not_ip_blocks", "remote_ip_blocks", "not_remote_ip_blocks")


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, AuthorizationPolicy):
        return
    spec = resource.spec
    if spec.selector is not None:
        check_labels(f, ["spec", "selector", "matchLabels"], spec.selector.match_labels)
    if spec.selector is not None and (spec.target_ref is not None or spec.target_refs):
        f.error(["spec", "selector"], "set only one of selector and targetRef(s)")
    if spec.action == "CUSTOM":
        if spec.provider is None or not spec.provider.name:
            f.error(["spec", "provider"], "action CUSTOM needs provider.name")
    elif spec.provider is not None:
        f.error(["spec", "provider"], f"provider is only allowed with action CUSTOM (got {spec.action})")
    if spec.action != "ALLOW" and not spec.rules:
        f.warn(["spec", "rules"], f"a {spec.action} policy without rules matches nothing")
    for i, rule in enumerate(spec.rules):
        path: list[str | int] = ["spec", "rules", i]
        for j, frm in enumerate(rule.from_):
            _source(f, [*path, "from", j, "source"], frm.source)
        for j, to in enumerate(rule.to):
            _operation(f, [*path, "to", j, "operation"], to.operation)
        for j, cond in enumerate(rule.when):
            cpath = [*path, "when", j]
            if cond.key not in _WHEN_EXACT and not _WHEN_PATTERN.match(cond.key):
                f.error([*cpath, "key"], "unknown condition key", cond.key)
            if not cond.values and not cond.not_values:
                f.error(cpath, "set values or notValues")
            if cond.key in ("source.ip", "remote.ip", "destination.ip"):
                for k, v in enumerate(cond.values):
                    _cidr(f, [*cpath, "values", k], v)
            if cond.key == "destination.port":
                for k, v in enumerate(cond.values):
                    _port(f, [*cpath, "values", k], v)


def _source(f: Findings, path: list[str | int], src: Source) -> None:
    if src == Source():
        f.error(path, "source must set at least one field")
    if (src.service_accounts or src.not_service_accounts) and (
        src.principals or src.not_principals or src.namespaces or src.not_namespaces
    ):
        f.error(path, "serviceAccounts cannot be combined with principals or namespaces")
    for alias, attr in (
        ("serviceAccounts", "service_accounts"),
        ("notServiceAccounts", "not_service_accounts"),
    ):
        for k, sa in enumerate(getattr(src, attr)):
            if sa.count("/") != 1:
                f.error([*path, alias, k], 'service account must be "namespace/name"', sa)
    for attr in _IP_FIELDS:
        alias = _camel(attr)
        for k, block in enumerate(getattr(src, attr)):
            _cidr(f, [*path, alias, k], block)
    for alias, attr in (
        ("principals", "principals"),
        ("notPrincipals", "not_principals"),
        ("requestPrincipals", "request_principals"),
        ("namespaces", "namespaces"),
    ):
        for k, value in enumerate(getattr(src, attr)):
            _match_string(f, [*path, alias, k], value)


def _operation(f: Findings, path: list[str | int], op: Operation) -> None:
    if op == Operation():
        f.error(path, "operation must set at least one field")
    for alias, attr in (("ports", "ports"), ("notPorts", "not_ports")):
        for k, port in enumerate(getattr(op, attr)):
            _port(f, [*path, alias, k], port)
    for alias, attr in (("methods", "methods"), ("notMethods", "not_methods")):
        for k, method in enumerate(getattr(op, attr)):
            if method != "*" and method.upper() not in _METHODS:
                f.warn([*path, alias, k], "not a standard HTTP method", method)
            elif method != method.upper():
                f.error([*path, alias, k], "methods are case-sensitive and must be uppercase", method)
    for alias, attr in (("paths", "paths"), ("notPaths", "not_paths")):
        for k, p in enumerate(getattr(op, attr)):
            if p != "*" and not p.startswith("/") and not p.startswith("*"):
                f.error([*path, alias, k], 'paths must start with "/" (or be a "*" match)', p)
    for alias, attr in (("hosts", "hosts"), ("notHosts", "not_hosts")):
        for k, h in enumerate(getattr(op, attr)):
            _match_string(f, [*path, alias, k], h)


def _match_string(f: Findings, path: list[str | int], value: str) -> None:
    """exact, "prefix*", "*suffix" or "*": a "*" anywhere else never matches."""
    if "*" in value[1:-1] or (value.startswith("*") and value.endswith("*") and value != "*"):
        f.error(path, 'a "*" is only allowed at the start or the end', value)


def _cidr(f: Findings, path: list[str | int], value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        f.error(path, "must be an IP address or CIDR block", value)


def _port(f: Findings, path: list[str | int], value: int | str) -> None:
    try:
        port = int(value)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        f.error(path, "must be a port number (0..65535)", value)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)
