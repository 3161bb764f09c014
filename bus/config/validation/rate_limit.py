"""Semantic checks for meshbus.io RateLimit (Envoy Gateway's rules for global rate limits)."""

from __future__ import annotations

import ipaddress

from meshbus.bus.config.resources import RateLimit, Resource
from meshbus.bus.config.validation.common import check_policy_scope
from meshbus.bus.config.validation.findings import Findings


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, RateLimit):
        return
    spec = resource.spec
    labels = spec.selector.match_labels if spec.selector is not None else None
    check_policy_scope(f, ["spec", "selector", "matchLabels"], labels, None, None)
    names: dict[str, int] = {}
    for i, rule in enumerate(spec.rules):
        path: list[str | int] = ["spec", "rules", i]
        if rule.name:
            if rule.name in names:
                f.error(
                    [*path, "name"], f"rule name is used twice (also rules[{names[rule.name]}])", rule.name
                )
            names.setdefault(rule.name, i)
        for j, sel in enumerate(rule.client_selectors):
            spath = [*path, "clientSelectors", j]
            if not sel.headers and sel.source_cidr is None:
                f.error(spath, "a client selector needs headers or sourceCIDR")
            seen: set[str] = set()
            for k, h in enumerate(sel.headers):
                hpath = [*spath, "headers", k]
                if h.name.lower() in seen:
                    f.error([*hpath, "name"], "header is selected twice in one client selector", h.name)
                seen.add(h.name.lower())
                if h.type == "Exact" and h.value is None:
                    f.error([*hpath, "value"], "an Exact header selector needs a value")
                if h.type == "Distinct" and h.value is not None:
                    f.error(
                        [*hpath, "value"],
                        "a Distinct header selector takes no value (every value counts apart)",
                    )
                if h.type == "Distinct" and h.invert:
                    f.error([*hpath, "invert"], "invert is only supported with type Exact")
            if sel.source_cidr is not None:
                try:
                    ipaddress.ip_network(sel.source_cidr.value, strict=False)
                except ValueError:
                    f.error(
                        [*spath, "sourceCIDR", "value"], "not a CIDR (like 10.0.0.0/8)", sel.source_cidr.value
                    )
