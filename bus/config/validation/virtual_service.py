"""Semantic checks for VirtualService (weights, matches, retries, faults, redirect/rewrite, ...)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from meshbus.bus.config.resources import Resource, VirtualService
from meshbus.bus.config.types import StringMatch
from meshbus.bus.config.validation.common import check_header_name, check_host, check_regex
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.virtual_service import (
    Destination,
    HTTPFaultInjection,
    HTTPMatchRequest,
    HTTPRetry,
    HTTPRoute,
    HTTPRouteDestination,
    RouteDestination,
)

# Envoy x-envoy-retry-on and x-envoy-retry-grpc-on policies (router_filter.rst).
RETRY_ON = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)
_STATUS = re.compile(r"^\d{3}$")
_PSEUDO_HEADERS = frozenset({"uri", "scheme", "method", "authority"})


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, VirtualService):
        return
    spec = resource.spec
    delegate_child = not spec.hosts
    if not spec.hosts:
        f.error(["spec", "hosts"], "at least one host is required")
    seen: set[str] = set()
    for i, host in enumerate(spec.hosts):
        check_host(f, ["spec", "hosts", i], host)
        if host in seen:
            f.error(["spec", "hosts", i], "duplicate host", host)
        seen.add(host)
        if host == "*" and (not spec.gateways or "mesh" in spec.gateways):
            f.error(
                ["spec", "hosts", i], 'wildcard host "*" is not allowed for VirtualServices bound to the mesh'
            )
    if not spec.http and not spec.tcp and not spec.tls and not delegate_child:
        f.error(["spec"], "at least one of http, tcp or tls routes is required")
    names: dict[str, int] = {}
    for i, route in enumerate(spec.http):
        path: list[str | int] = ["spec", "http", i]
        if route.name:
            if route.name in names:
                f.error(
                    [*path, "name"],
                    f"duplicate route name (also used by http[{names[route.name]}])",
                    route.name,
                )
            names.setdefault(route.name, i)
        _http_route(f, path, route)
    l4_routes: list[tuple[str, int, tuple[RouteDestination, ...]]] = [
        ("tcp", i, r.route) for i, r in enumerate(spec.tcp or ())
    ] + [("tls", i, r.route) for i, r in enumerate(spec.tls or ())]
    for kind, i, dests in l4_routes:
        _weights(f, ["spec", kind, i], dests)
        for j, dest in enumerate(dests):
            _destination(f, ["spec", kind, i, "route", j, "destination"], dest.destination)


def _http_route(f: Findings, path: list[str | int], route: HTTPRoute) -> None:
    actions = [
        n
        for n, v in (
            ("route", route.route),
            ("redirect", route.redirect),
            ("directResponse", route.direct_response),
            ("delegate", route.delegate),
        )
        if v
    ]
    if len(actions) > 1:
        f.error(
            path, f"a route does one of route, redirect, directResponse, delegate (got {', '.join(actions)})"
        )
    if not actions:
        f.error(path, "a route needs route, redirect or directResponse")
    if route.rewrite is not None and route.redirect is not None:
        f.error([*path, "rewrite"], "rewrite cannot be combined with redirect")
    if (
        route.rewrite is not None
        and route.rewrite.uri is not None
        and route.rewrite.uri_regex_rewrite is not None
    ):
        f.error([*path, "rewrite"], "set only one of uri and uriRegexRewrite")
    if route.rewrite is not None and route.rewrite.uri_regex_rewrite is not None:
        check_regex(f, [*path, "rewrite", "uriRegexRewrite", "match"], route.rewrite.uri_regex_rewrite.match)
    for j, match in enumerate(route.match):
        _match(f, [*path, "match", j], match)
    _weights(f, path, route.route)
    for j, dest in enumerate(route.route):
        _destination(f, [*path, "route", j, "destination"], dest.destination)
    if route.redirect is not None:
        rd = route.redirect
        rpath = [*path, "redirect"]
        if rd.uri is not None and rd.prefix_rewrite is not None:
            f.error(rpath, "set only one of uri and prefixRewrite")
        if rd.port is not None and rd.derive_port is not None:
            f.error(rpath, "set only one of port and derivePort")
        if rd.redirect_code not in (301, 302, 303, 307, 308):
            f.error([*rpath, "redirectCode"], "must be one of 301, 302, 303, 307, 308", rd.redirect_code)
        if (
            rd.uri is None
            and rd.authority is None
            and rd.scheme is None
            and rd.port is None
            and rd.derive_port is None
            and rd.prefix_rewrite is None
        ):
            f.error(rpath, "redirect must set at least one of uri, prefixRewrite, authority, scheme, port")
    if route.direct_response is not None:
        dr = route.direct_response
        if not 200 <= dr.status <= 599:
            f.error([*path, "directResponse", "status"], "must be an HTTP status in 200..599", dr.status)
        if dr.body is not None and (dr.body.string is None) == (dr.body.bytes is None):
            f.error([*path, "directResponse", "body"], "set exactly one of string and bytes")
    if route.retries is not None:
        _retries(f, [*path, "retries"], route.retries)
        ptt = route.retries.per_try_timeout
        if ptt is not None and route.timeout is not None and ptt > route.timeout:
            f.warn(
                [*path, "retries", "perTryTimeout"],
                f"perTryTimeout ({ptt:g}s) is longer than the route timeout ({route.timeout:g}s), "
                "which bounds all attempts together",
            )
    if route.fault is not None:
        _fault(f, [*path, "fault"], route.fault)
        if route.timeout is not None or route.retries is not None:
            f.warn(
                [*path, "fault"],
                "timeouts and retries do not apply to a route with fault injection (as in Istio)",
            )
    if route.mirror is not None:
        _destination(f, [*path, "mirror"], route.mirror)
        if route.mirrors:
            f.error([*path, "mirrors"], "set only one of mirror and mirrors")
    elif route.mirror_percentage is not None:
        f.warn([*path, "mirrorPercentage"], "mirrorPercentage has no effect without mirror")
    for j, m in enumerate(route.mirrors):
        _destination(f, [*path, "mirrors", j, "destination"], m.destination)
    if route.cors_policy is not None:
        for j, origin in enumerate(route.cors_policy.allow_origins):
            _string_match(f, [*path, "corsPolicy", "allowOrigins", j], origin, allow_empty=False)
    _header_ops(f, path, route)


def _header_ops(f: Findings, path: list[str | int], route: HTTPRoute) -> None:
    blocks = [([*path, "headers"], route.headers)]
    blocks += [([*path, "route", j, "headers"], d.headers) for j, d in enumerate(route.route)]
    for hpath, headers in blocks:
        if headers is None:
            continue
        for side, ops in (("request", headers.request), ("response", headers.response)):
            if ops is None:
                continue
            for op, names in (("set", list(ops.set)), ("add", list(ops.add)), ("remove", list(ops.remove))):
                for name in names:
                    key: str | int = name if op != "remove" else names.index(name)
                    if name.lower() in ("host", ":authority") and side == "request":
                        f.error(
                            [*hpath, side, op, key], "use rewrite.authority to change the Host header", name
                        )
                    elif not name or name.startswith(":"):
                        f.error([*hpath, side, op, key], "invalid header name", name)


def _match(f: Findings, path: list[str | int], m: HTTPMatchRequest) -> None:
    for field, sm in (("uri", m.uri), ("scheme", m.scheme), ("method", m.method), ("authority", m.authority)):
        if sm is not None:
            _string_match(f, [*path, field], sm, allow_empty=False)
    for field, mapping in (("headers", m.headers), ("withoutHeaders", m.without_headers)):
        for name, sm in mapping.items():
            check_header_name(f, [*path, field, name], name)
            if name in _PSEUDO_HEADERS and field == "headers":
                f.warn([*path, field, name], f'header key "{name}" is ignored by Istio; use the {name} match')
            _string_match(f, [*path, field, name], sm, allow_empty=True)
    for name, sm in m.query_params.items():
        _string_match(f, [*path, "queryParams", name], sm, allow_empty=True)
        if sm.prefix is not None:
            f.error([*path, "queryParams", name], "query parameters support exact and regex only")
    if m.ignore_uri_case and m.uri is not None and m.uri.regex is not None:
        f.warn([*path, "ignoreUriCase"], "ignoreUriCase applies to exact and prefix matches only")


def _string_match(f: Findings, path: list[str | int], sm: StringMatch, *, allow_empty: bool) -> None:
    if sm.is_empty and not allow_empty:
        f.error(path, "set one of exact, prefix, regex")
    if sm.regex is not None:
        check_regex(f, [*path, "regex"], sm.regex)


def _weights(
    f: Findings, path: list[str | int], routes: Sequence[HTTPRouteDestination | RouteDestination]
) -> None:
    total = 0
    for j, dest in enumerate(routes):
        w = dest.weight
        if w is None:
            continue
        if not 0 <= w <= 100:
            f.error([*path, "route", j, "weight"], "weight must be between 0 and 100", w)
        total += w
    if len(routes) > 1:
        if any(d.weight is None for d in routes):
            j = next(j for j, d in enumerate(routes) if d.weight is None)
            f.error(
                [*path, "route", j, "weight"], "weight is required when a route has more than one destination"
            )
        elif total != 100:
            f.error([*path, "route", len(routes) - 1, "weight"], f"weights must add up to 100 (got {total})")
    elif len(routes) == 1 and routes[0].weight not in (None, 100, 0) and total != 100:
        # Istio gives a single destination 100% whatever its weight; say so rather than surprise.
        f.warn(
            [*path, "route", 0, "weight"],
            "a single destination always gets 100% of traffic",
            routes[0].weight,
        )


def _destination(f: Findings, path: list[str | int], dest: Destination) -> None:
    check_host(f, [*path, "host"], dest.host, allow_wildcard=False)


def _retries(f: Findings, path: list[str | int], r: HTTPRetry) -> None:
    if r.attempts is not None and r.attempts < 0:
        f.error([*path, "attempts"], "attempts must be >= 0", r.attempts)
    if r.retry_on is not None:
        for token in (t.strip() for t in r.retry_on.split(",")):
            if token in RETRY_ON or _STATUS.match(token):
                if _STATUS.match(token) and not 100 <= int(token) <= 599:
                    f.error([*path, "retryOn"], f'"{token}" is not an HTTP status code')
                continue
            f.error(
                [*path, "retryOn"],
                f'unknown retry policy "{token}" (known: {", ".join(sorted(RETRY_ON))}, or an HTTP status code)',
            )
    if r.per_try_timeout is not None and r.attempts == 0:
        f.warn([*path, "perTryTimeout"], "perTryTimeout has no effect when attempts is 0")


def _fault(f: Findings, path: list[str | int], fault: HTTPFaultInjection) -> None:
    if fault.delay is None and fault.abort is None:
        f.error(path, "fault needs delay or abort")
    if fault.delay is not None:
        d = fault.delay
        if d.fixed_delay is None and d.exponential_delay is None:
            f.error([*path, "delay", "fixedDelay"], "delay needs fixedDelay")
        if d.percentage is None and d.percent is None:
            f.warn([*path, "delay"], "no percentage: no request will be delayed")
        if d.percent is not None and not 0 <= d.percent <= 100:
            f.error([*path, "delay", "percent"], "percent must be between 0 and 100", d.percent)
    if fault.abort is not None:
        a = fault.abort
        if a.http_status is None and a.grpc_status is None and a.http2_error is None:
            f.error([*path, "abort", "httpStatus"], "abort needs httpStatus")
        if a.http_status is not None and not 200 <= a.http_status <= 599:
            f.error([*path, "abort", "httpStatus"], "httpStatus must be in 200..599", a.http_status)
        if a.percentage is None:
            f.warn([*path, "abort"], "no percentage: no request will be aborted")
