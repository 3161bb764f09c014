"""Checks shared by several kinds: hosts, regexes, header names, label maps."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

from meshbus.bus.config.validation.findings import Findings

Path = Sequence[str | int]

_LABEL = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
# HTTP header names Istio accepts in matches: lowercase token characters.
_HEADER_NAME = re.compile(r"^:?[a-z0-9!#$%&'*+\-.^_`|~]+$")  # ":authority" style pseudo-headers too
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def host_problem(host: str, *, allow_wildcard: bool = True, allow_ip: bool = True) -> str | None:
    """Why ``host`` is not a valid Istio host (FQDN, short name, ``*.suffix`` or ``*``), or None."""
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
    if labels[0] == "*":
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


def check_header_name(f: Findings, path: Path, name: str) -> None:
    if not _HEADER_NAME.match(name):
        f.error(path, "header names must be lowercase and hyphen-separated", name)


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
