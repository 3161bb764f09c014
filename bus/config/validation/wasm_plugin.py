"""Semantic checks for WasmPlugin (Istio's ValidateWasmPlugin and CRD rules); not enforced by meshbus."""

from __future__ import annotations

import re

from meshbus.bus.config.resources import Resource, WasmPlugin
from meshbus.bus.config.validation.common import check_policy_spec
from meshbus.bus.config.validation.findings import Findings

_SCHEMES = ("", "file", "http", "https", "oci")
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_BAD = re.compile(r"[\s#^{}|\\\"<>`]|%(?![0-9a-fA-F]{2})")  # what a Go URL parse refuses


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, WasmPlugin):
        return
    spec = resource.spec
    check_policy_spec(f, spec)
    if not _url_ok(spec.url):
        f.error(
            ["spec", "url"], f"url must have schema one of [{', '.join(s for s in _SCHEMES if s)}]", spec.url
        )
    env = spec.vm_config.env if spec.vm_config is not None else ()
    seen: dict[str, int] = {}
    for i, var in enumerate(env):
        if var.name in seen:
            f.error(
                ["spec", "vmConfig", "env", i, "name"],
                f"Duplicate value (also env[{seen[var.name]}])",
                var.name,
            )
        seen.setdefault(var.name, i)
        if var.value_from == "HOST" and var.value is not None:
            f.error(["spec", "vmConfig", "env", i, "value"], "value may only be set when valueFrom is INLINE")
    for i, match in enumerate(spec.match):
        numbers = [p.number for p in match.ports]
        for j, n in enumerate(numbers):
            if n in numbers[:j]:
                f.error(["spec", "match", i, "ports", j, "number"], "Duplicate value", n)


def _url_ok(url: str) -> bool:
    """Istio's strictParseURL: ``scheme://...`` with a known scheme, or ``host[/path]`` read as http."""
    m = _SCHEME.match(url)
    if m is not None:
        return m.group(1).lower() in _SCHEMES and not _BAD.search(url[m.end() :])
    return bool(url) and not _BAD.search(url)
