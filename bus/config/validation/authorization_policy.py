"""Semantic checks for AuthorizationPolicy: Istio's ValidateAuthorizationPolicy and its CRD rules.

Where meshbus says more than Istio (a ``*`` that matches literally, a lowercase method, a path
without a leading ``/``) it warns: Istio accepts those policies, they just rarely mean what was meant.
"""

from __future__ import annotations

import ipaddress
import re

from meshbus.bus.config.authz.compile import DRY_RUN_ANNOTATION, parse_bool
from meshbus.bus.config.resources import AuthorizationPolicy, Resource
from meshbus.bus.config.security import Condition, Operation, Source
from meshbus.bus.config.validation.common import check_policy_spec
from meshbus.bus.config.validation.findings import Findings

# Istio conditions (istio.io docs/reference/config/security/conditions, security.ValidateAttribute).
_WHEN_EXACT = frozenset(
    {
        "source.ip",
        "remote.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "source.trustDomain",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    }
)
_WHEN_MAP_PREFIXES = ("request.headers", "request.auth.claims", "experimental.envoy.filters.")
_WHEN_REPLACED = {
    "destination.namespace": "is replaced by the metadata.namespace",
    "destination.name": "is deprecated: only supported in v1alpha1",
    "destination.user": "is deprecated: only supported in v1alpha1",
}
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
_SOURCE_LISTS = (
    ("principals", "principals"),
    ("notPrincipals", "not_principals"),
    ("requestPrincipals", "request_principals"),
    ("notRequestPrincipals", "not_request_principals"),
    ("namespaces", "namespaces"),
    ("notNamespaces", "not_namespaces"),
    ("ipBlocks", "ip_blocks"),
    ("notIpBlocks", "not_ip_blocks"),
    ("remoteIpBlocks", "remote_ip_blocks"),
    ("notRemoteIpBlocks", "not_remote_ip_blocks"),
    ("serviceAccounts", "service_accounts"),
    ("notServiceAccounts", "not_service_accounts"),
    ("trustDomains", "trust_domains"),
    ("notTrustDomains", "not_trust_domains"),
)
_OPERATION_LISTS = (
    ("hosts", "hosts"),
    ("notHosts", "not_hosts"),
    ("ports", "ports"),
    ("notPorts", "not_ports"),
    ("methods", "methods"),
    ("notMethods", "not_methods"),
    ("paths", "paths"),
    ("notPaths", "not_paths"),
)
# What a CUSTOM rule may not use (Istio: "... is currently not supported with CUSTOM action").
_CUSTOM_UNSUPPORTED_SOURCE = (
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
)
_CUSTOM_UNSUPPORTED_KEYS = (
    "source.namespace",
    "source.serviceAccount",
    "source.trustDomain",
    "source.principal",
)
_PATH_LITERAL = re.compile(r"^[a-zA-Z0-9\-._~%!$&'()+,;:=@]+$")


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, AuthorizationPolicy):
        return
    spec = resource.spec
    check_policy_spec(f, spec)
    _dry_run(f, resource)
    if spec.action == "CUSTOM":
        if spec.rules is None:
            f.error(["spec", "rules"], "CUSTOM action without rules never triggers (add an empty rule {})")
        elif spec.provider is None or not spec.provider.name:
            f.error(["spec", "provider", "name"], "provider.name must not be empty with action CUSTOM")
    elif spec.provider is not None:
        f.error(
            ["spec", "provider"], f"provider must not be set with a non-CUSTOM action (got {spec.action})"
        )
    if spec.action == "DENY" and spec.rules is None:
        f.error(["spec", "rules"], "DENY action without rules never triggers (add an empty rule {})")
    for i, rule in enumerate(spec.rules or ()):
        path: list[str | int] = ["spec", "rules", i]
        if rule.from_ is not None and not rule.from_:
            f.error([*path, "from"], "from must not be empty")
        for j, frm in enumerate(rule.from_ or ()):
            _source(f, [*path, "from", j, "source"], frm.source, custom=spec.action == "CUSTOM")
        if rule.to is not None and not rule.to:
            f.error([*path, "to"], "to must not be empty")
        for j, to in enumerate(rule.to or ()):
            _operation(f, [*path, "to", j, "operation"], to.operation)
        for j, cond in enumerate(rule.when):
            _condition(f, [*path, "when", j], cond, custom=spec.action == "CUSTOM")


def _dry_run(f: Findings, resource: AuthorizationPolicy) -> None:
    """Istio reads ``istio.io/dry-run`` with Go's ParseBool and supports it on ALLOW and DENY."""
    value = resource.metadata.annotations.get(DRY_RUN_ANNOTATION)
    if value is None:
        return
    path: list[str | int] = ["metadata", "annotations", DRY_RUN_ANNOTATION]
    dry = parse_bool(value)
    if dry is None:
        f.warn(path, 'not a boolean ("true" or "false"): the policy is enforced', value)
    elif dry and resource.spec.action == "AUDIT":
        f.warn(path, "dry run is for ALLOW and DENY policies: this AUDIT policy marks nothing")
    elif dry and resource.spec.action == "CUSTOM":
        f.warn(
            path,
            "dry run is for ALLOW and DENY policies (Istio); meshbus records which requests this CUSTOM "
            "policy matches and sends no check",
        )


def _source(f: Findings, path: list[str | int], src: Source, *, custom: bool) -> None:
    if src == Source():
        f.error(path, "source must not be empty")
    if (src.service_accounts or src.not_service_accounts) and (
        src.principals or src.not_principals or src.namespaces or src.not_namespaces
    ):
        f.error(path, "cannot set serviceAccounts with namespaces or principals")
    for alias, attr in _SOURCE_LISTS:
        values = getattr(src, attr)
        _non_empty(f, [*path, alias], values)
        if custom and values and alias in _CUSTOM_UNSUPPORTED_SOURCE:
            f.error([*path, alias], f"{alias} is not supported with action CUSTOM")
    for alias in ("ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks"):
        for k, block in enumerate(getattr(src, _attr(alias))):
            _cidr(f, [*path, alias, k], block)
    for alias in ("serviceAccounts", "notServiceAccounts"):
        for k, sa in enumerate(getattr(src, _attr(alias))):
            _service_account(f, [*path, alias, k], sa)
    for alias in ("trustDomains", "notTrustDomains"):
        for k, td in enumerate(getattr(src, _attr(alias))):
            _wildcard(f, [*path, alias, k], td)
            if "/" in td:
                f.error([*path, alias, k], "trust domain must not contain '/'", td)
    for alias in ("principals", "notPrincipals", "requestPrincipals", "notRequestPrincipals", "namespaces"):
        for k, value in enumerate(getattr(src, _attr(alias))):
            _literal_star(f, [*path, alias, k], value)


def _operation(f: Findings, path: list[str | int], op: Operation) -> None:
    if op == Operation():
        f.error(path, "operation must not be empty")
    for alias, attr in _OPERATION_LISTS:
        _non_empty(f, [*path, alias], getattr(op, attr))
    for alias in ("ports", "notPorts"):
        for k, port in enumerate(getattr(op, _attr(alias))):
            _port(f, [*path, alias, k], port)
    for alias in ("methods", "notMethods"):
        for k, method in enumerate(getattr(op, _attr(alias))):
            if method and "*" not in method and method.upper() not in _METHODS:
                f.warn([*path, alias, k], "not a standard HTTP method", method)
            elif method != method.upper():
                f.warn([*path, alias, k], "methods match case-sensitively; requests use uppercase", method)
    for alias in ("paths", "notPaths"):
        for k, p in enumerate(getattr(op, _attr(alias))):
            _path(f, [*path, alias, k], p)
    for alias in ("hosts", "notHosts"):
        for k, h in enumerate(getattr(op, _attr(alias))):
            _literal_star(f, [*path, alias, k], h)


def _condition(f: Findings, path: list[str | int], cond: Condition, *, custom: bool) -> None:
    key = cond.key
    if not key:
        f.error([*path, "key"], "key must not be empty")
        return
    if not cond.values and not cond.not_values:
        f.error(path, f"at least one of values or notValues must be set for key {key}")
        return
    for alias, values in (("values", cond.values), ("notValues", cond.not_values)):
        _non_empty(f, [*path, alias], values)
    if key in _WHEN_REPLACED:
        f.error([*path, "key"], f"attribute {key} {_WHEN_REPLACED[key]}", key)
        return
    if key.startswith("destination.labels"):
        f.error([*path, "key"], f"attribute {key} is replaced by the workload selector", key)
        return
    if key.startswith(_WHEN_MAP_PREFIXES):
        open_at = key.find("[")
        if not (key.endswith("]") and 0 < open_at < len(key) - 2):
            f.error([*path, "key"], "bad key: should have the form a[b]", key)
    elif key not in _WHEN_EXACT:
        f.error([*path, "key"], "unknown attribute", key)
        return
    if custom and (key in _CUSTOM_UNSUPPORTED_KEYS or key.startswith("request.auth.")):
        f.error([*path, "key"], f"{key} is not supported with action CUSTOM", key)
    for alias, values in (("values", cond.values), ("notValues", cond.not_values)):
        for k, v in enumerate(values):
            vpath = [*path, alias, k]
            if key in ("source.ip", "remote.ip", "destination.ip"):
                _cidr(f, vpath, v)
            elif key == "destination.port":
                _port(f, vpath, v)
            elif key == "source.serviceAccount":
                _service_account(f, vpath, v)
            elif key == "source.trustDomain":
                _wildcard(f, vpath, v)


def _non_empty(f: Findings, path: list[str | int], values: tuple[str | int, ...]) -> None:
    for k, v in enumerate(values):
        if v == "":
            f.error([*path, k], "empty value not allowed")


def _wildcard(f: Findings, path: list[str | int], value: str) -> None:
    """Istio's CheckWildcardValues: one ``*``, at the start or the end."""
    count = value.count("*")
    if count > 1:
        f.error(path, "at most one wildcard is allowed", value)
    elif count == 1 and not (value.startswith("*") or value.endswith("*")):
        f.error(path, "wildcard is only allowed at the start or end", value)


def _literal_star(f: Findings, path: list[str | int], value: str) -> None:
    """Istio accepts a ``*`` anywhere here, but only a leading/trailing one is a wildcard."""
    if "*" in value[1:-1] or (value.startswith("*") and value.endswith("*") and value != "*"):
        f.warn(path, 'only a "*" at the start or the end is a wildcard; this one matches literally', value)


def _service_account(f: Findings, path: list[str | int], value: str) -> None:
    """Istio's CheckServiceAccount: ``name`` (the policy's namespace) or ``namespace/name``."""
    if "*" in value:
        f.error(path, "wildcard not allowed in a service account", value)
    elif len(value) > 320:
        f.error(path, "a service account is at most 320 characters", value)
    elif value and (value.count("/") > 1 or any(not part for part in value.split("/"))):
        f.error(path, "expected 'serviceAccount' or 'namespace/serviceAccount'", value)


def _path(f: Findings, path: list[str | int], value: str) -> None:
    """Istio's CheckValidPathTemplate (``{*}`` one segment, ``{**}`` the rest, last)."""
    templated = "{*}" in value or "{**}" in value
    seen_any = False
    for glob in value.strip("/").split("/"):
        if glob in ("{*}", "{**}"):
            if seen_any:
                f.error(path, "invalid path template: {**} must be the last operator", value)
                return
            seen_any = glob == "{**}"
            continue
        if "{" in glob or "}" in glob:
            f.error(path, "invalid path template: '{' or '}' outside {*} or {**}", value)
            return
        if templated and not _PATH_LITERAL.match(glob):
            f.error(path, f"invalid path template: segment {glob!r} is not a valid literal", value)
            return
    if value and not value.startswith(("/", "*")):
        f.warn(path, 'request paths start with "/": this path never matches', value)


def _cidr(f: Findings, path: list[str | int], value: str) -> None:
    if not value:
        return  # reported as an empty value
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        f.error(path, "must be an IP address or CIDR block", value)


def _port(f: Findings, path: list[str | int], value: int | str) -> None:
    text = str(value)
    if text and (not (text.isascii() and text.isdigit()) or int(text) > 65535):
        f.error(path, "must be a port number (0..65535)", value)


def _attr(alias: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), alias)
