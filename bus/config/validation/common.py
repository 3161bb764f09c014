"""Checks shared by several kinds: hosts, regexes, header names, label maps."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Protocol

from meshbus.bus.config.types import PolicySelector, PolicyTargetReference
from meshbus.bus.config.validation.findings import Findings

Path = Sequence[str | int]

_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
# HTTP header names Istio accepts in matches (validHeaderNameRegex: RFC 7230 token characters).
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-zA-Z]+$")
_PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})
JWT_CLAIM_PREFIX = "@request.auth.claims"
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


_WILDCARD_LABEL = re.compile(r"^(\*|\*-)?[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")  # "*x", "*-x" (Istio)


def host_problem(
    host: str, *, allow_wildcard: bool = True, allow_ip: bool = True, allow_partial: bool = False
) -> str | None:
    """Why ``host`` is not a valid Istio host (FQDN, short name, ``*.suffix`` or ``*``), or None.

    ``allow_partial``: the first label may also be a partial wildcard (``*x``, ``*-x``), which Istio's
    ValidateWildcardDomain accepts (ServiceEntry hosts).
    """
    if not host:
        return "host must not be empty"
    if allow_ip:
        try:
            ipaddress.ip_address(host)
            return None
        except ValueError:
            pass
    if host == "*":
        return None if allow_wildcard else "wildcard host is not allowed here"
    if len(host) > 255:
        return "host is longer than 255 characters"
    labels = host.split(".")
    if labels[0] == "*" or (allow_partial and labels[0].startswith("*") and _WILDCARD_LABEL.match(labels[0])):
        if not allow_wildcard:
            return "wildcard host is not allowed here"
        labels = labels[1:]
    elif "*" in host:
        return 'a wildcard is only allowed as the whole left-most label ("*.example.com")'
    if host.endswith("."):
        labels = labels[:-1]
    for label in labels:
        if len(label) > 63:
            return f'host label "{label}" is longer than 63 characters'
        if not _LABEL.match(label):
            return "host must be a DNS name: labels of letters, digits and '-', separated by '.'"
    if labels and labels[-1].isascii() and labels[-1].isdigit():
        return "the top-level domain cannot be all-numeric"
    return None


def check_host(f: Findings, path: Path, host: str, **kwargs: bool) -> None:
    problem = host_problem(host, **kwargs)
    if problem:
        f.error(path, problem, host)


def check_regex(f: Findings, path: Path, pattern: str) -> None:
    """Istio regexes are RE2; Python's re accepts a superset, so this catches syntax errors only."""
    try:
        re.compile(pattern)
    except re.error as exc:
        f.error(path, f"invalid regular expression: {exc}", pattern)
        return
    if re.search(r"\(\?[=!<]|\\[1-9]", pattern):
        f.error(path, "lookaround and backreferences are not supported (RE2 syntax)", pattern)


def is_jwt_claim_route(name: str) -> bool:
    """Istio's jwt.ToRoutingClaim: ``@request.auth.claims.a.b`` or ``@request.auth.claims[a][b]``."""
    if not name.lower().startswith(JWT_CLAIM_PREFIX):
        return False
    rest = name[len(JWT_CLAIM_PREFIX) :]
    return (rest.startswith(".") and len(rest) > 1) or (
        rest.startswith("[") and rest.endswith("]") and len(rest) > 2
    )


def check_header_name(f: Findings, path: Path, name: str) -> None:
    """A header match key: a token, a pseudo-header, or a JWT claim route (Istio's check)."""
    if not name:
        f.error(path, "header name cannot be empty")
    elif not (is_jwt_claim_route(name) or name in _PSEUDO_HEADERS or _HEADER_NAME.match(name)):
        f.error(path, "not a valid header name", name)


def port_name_problem(name: str) -> str | None:
    """Istio's ValidatePortName: a DNS-1123 label."""
    if len(name) > 63 or not _LABEL.match(name):
        return "invalid port name (a DNS-1123 label: letters, digits and '-')"
    return None


def check_alpha_selector(f: Findings, path: Path, labels: Mapping[str, str] | None, what: str) -> None:
    """Istio's ValidateAlphaWorkloadSelector (networking ``workloadSelector.labels``)."""
    if labels is None:
        return
    for key, value in labels.items():
        if not key:
            f.error([*path, key], "empty key is not supported in selector")
        elif "*" in key or "*" in value:
            f.error([*path, key], "wildcard is not supported in selector", f"{key}={value}")
    if not labels:
        f.warn(path[:-1], f"workload selector specified without labels: the {what} applies to every workload")


def check_labels(f: Findings, path: Path, labels: Mapping[str, str]) -> None:
    for key, value in labels.items():
        if len(key) > 317 or not _LABEL_KEY.match(key):
            f.error([*path, key], "invalid label key", key)
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            f.error([*path, key], "invalid label value (at most 63 of a-z, A-Z, 0-9, '-', '_', '.')", value)


def check_namespaced_hosts(
    f: Findings, path: Path, hosts: Sequence[str], *, require_namespace: bool = False
) -> None:
    """Gateway/Sidecar host form ``ns/dnsName`` (namespace may be ``*``, ``.``, ``~``).

    Gateways default a missing namespace to ``*/``; Sidecar egress hosts must name it.
    """
    for i, entry in enumerate(hosts):
        ns, sep, dns = entry.partition("/")
        if not sep:
            if require_namespace:
                f.error([*path, i], 'hosts must be of the form "namespace/dnsName" (e.g. "./*")', entry)
                continue
            ns, dns = "*", entry
        if not ns or not (ns in ("*", ".", "~") or _LABEL.match(ns)):
            f.error([*path, i], 'namespace part must be a name, "*", "." or "~"', entry)
            continue
        if dns != "*":
            check_host(f, [*path, i], dns)


# Istio's validatePolicyTargetReference: what a policy's targetRef(s) may point at (group, kind).
TARGET_REF_KINDS = frozenset(
    {
        ("", "Service"),
        ("networking.istio.io", "ServiceEntry"),
        ("gateway.networking.k8s.io", "Gateway"),
        ("gateway.networking.k8s.io", "GatewayClass"),
    }
)


class _Scoped(Protocol):
    @property
    def selector(self) -> PolicySelector | None: ...
    @property
    def target_ref(self) -> PolicyTargetReference | None: ...
    @property
    def target_refs(self) -> Sequence[PolicyTargetReference] | None: ...


def check_policy_spec(f: Findings, spec: _Scoped) -> None:
    """check_policy_scope for a spec with ``selector.matchLabels``, ``targetRef`` and ``targetRefs``."""
    labels = spec.selector.match_labels if spec.selector is not None else None
    check_policy_scope(f, ["spec", "selector", "matchLabels"], labels, spec.target_ref, spec.target_refs)


def check_policy_scope(
    f: Findings,
    selector_path: Path,
    match_labels: Mapping[str, str] | None,
    target_ref: PolicyTargetReference | None,
    target_refs: Sequence[PolicyTargetReference] | None,
) -> None:
    """selector xor targetRef xor targetRefs, selector labels, and target references, as Istio checks them.

    ``match_labels`` is None when no selector is set.
    """
    if (match_labels is not None) + (target_ref is not None) + bool(target_refs) > 1:
        f.error(["spec"], "only one of selector, targetRef and targetRefs can be set")
    if match_labels is not None:
        for key, value in match_labels.items():
            if not key:
                f.error([*selector_path, key], "key must not be empty")
            elif "*" in key or "*" in value:
                f.error([*selector_path, key], "wildcard is not supported in selector", f"{key}={value}")
            if len(value) > 63:
                f.error([*selector_path, key], "label value is longer than 63 characters", value)
        if not match_labels:
            f.warn(selector_path[:-1], "workload selector specified without labels (selects every workload)")
    refs: list[tuple[list[str | int], PolicyTargetReference]] = []
    if target_ref is not None:
        refs.append((["spec", "targetRef"], target_ref))
    refs += [(["spec", "targetRefs", i], r) for i, r in enumerate(target_refs or ())]
    for path, ref in refs:
        if ref.namespace:
            f.error(
                [*path, "namespace"], "cross namespace referencing is not currently supported", ref.namespace
            )
        if (ref.group, ref.kind) not in TARGET_REF_KINDS:
            allowed = ", ".join(f"{g or 'core'}/{k}" for g, k in sorted(TARGET_REF_KINDS))
            f.error(path, f"targetRef must be to one of {allowed} (got {ref.group or 'core'}/{ref.kind})")
