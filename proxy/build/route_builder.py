"""VirtualService (+ LocalRateLimit) -> compiled Routes, one list per virtual host and port.

Istio translates each HTTPRoute into one Envoy route per match block (a route without matches is
one catch-all), in order, so the first matching block wins; we do the same, which also tells a
prefix rewrite which prefix matched. Destinations are resolved here, once: short hosts in the
VirtualService's namespace, the port from the destination, else the service's only port, else the
port the request came in on (the virtual host's).
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from meshbus.bus.config.hosts import host_matches, to_fqdn
from meshbus.bus.config.proxy_kinds import LocalRateLimit, VirtualService
from meshbus.bus.config.virtual_service import Destination as DestinationSpec
from meshbus.bus.config.virtual_service import Headers, HTTPDirectResponse, HTTPRoute
from meshbus.proxy.build.cluster_builder import RuleSet, Service, subset_exists
from meshbus.proxy.build.errors import build_error
from meshbus.proxy.core.match import MatchCompileError, ReqPred, compile_match, compile_regex, describe_match
from meshbus.proxy.core.retry import DEFAULT_RETRY, retry_policy_from
from meshbus.proxy.core.routing import Destination, Mirror, RedirectAction, Route
from meshbus.proxy.filters.builtin import build_chain
from meshbus.proxy.filters.cors import CORS, CorsPolicy, cors_policy_from
from meshbus.proxy.filters.fault import FAULT, FaultPolicy, fault_policy_from
from meshbus.proxy.filters.headerops import (
    EMPTY_HEADER_OPS,
    HEADER_OPS,
    HeaderOps,
    RouteHeaderOps,
    make_header_ops,
)
from meshbus.proxy.filters.ratelimit import LOCAL_RATELIMIT, TokenBucket

log = logging.getLogger(__name__)

Path = tuple[str | int, ...]
# (cluster name for (fqdn, port, subset)) -> ensures the cluster exists, returns its name
EnsureCluster = Callable[[str, int, str], str]
Entry = tuple[tuple[ReqPred, ...], Route]


class RouteContext:
    """What compiling a VirtualService needs to know about the rest of the config.

    Compiling goes through `service`, `has_subset` and `ensure_cluster`, which note the hosts looked up
    and the clusters asked for: a virtual host compiled from the same VirtualService, whose looked-up
    hosts still resolve to the same Service and RuleSet objects, compiles to the same routes, so the
    next build can reuse them (runtime.build_runtime) after asking for the same clusters again.
    """

    def __init__(
        self,
        services: Mapping[str, Service],
        rules: Mapping[str, RuleSet],
        ensure_cluster: EnsureCluster,
        rate_limits: list[LocalRateLimit],
        source_namespace: str = "default",
        source_labels: Mapping[str, str] | None = None,
        plugins: Any = None,
    ) -> None:
        self.services = services
        self.rules = rules
        self._ensure = ensure_cluster
        self.rate_limits = rate_limits
        # The workload this proxy serves: match blocks with sourceLabels / sourceNamespace apply only
        # when it qualifies (Istio decides this per proxy when it generates routes, so do we).
        self.source_namespace = source_namespace
        self.source_labels: Mapping[str, str] = source_labels or {}
        self.looked_up: set[str] = set()
        self.ensured: list[tuple[str, int, str]] = []
        # The Plugins this workload runs (proxy/filters/plugins PluginSet): their outbound filters.
        self.plugins = plugins

    def plugin_filters(self, port: int | None) -> Mapping[str, Any]:
        return self.plugins.filters("outbound", port) if self.plugins else {}

    def service(self, fqdn: str) -> Service | None:
        self.looked_up.add(fqdn)
        return self.services.get(fqdn)

    def has_subset(self, fqdn: str, subset: str) -> bool:
        self.looked_up.add(fqdn)
        return subset_exists(self.rules, fqdn, subset)

    def ensure_cluster(self, fqdn: str, port: int, subset: str) -> str:
        self.looked_up.add(fqdn)
        self.ensured.append((fqdn, port, subset))
        return self._ensure(fqdn, port, subset)

    def start_recording(self) -> None:
        self.looked_up = set()
        self.ensured = []


def _headers(h: Headers | None) -> tuple[HeaderOps, HeaderOps, str | None]:
    """(request ops, response ops, authority) from Istio ``headers``; setting host rewrites authority."""
    if h is None:
        return EMPTY_HEADER_OPS, EMPTY_HEADER_OPS, None
    authority = None
    req = EMPTY_HEADER_OPS
    if h.request is not None:
        sets = dict(h.request.set)
        for k in list(sets):
            if k.lower() in ("host", ":authority"):
                authority = sets.pop(k)
        req = make_header_ops(sets, h.request.add, h.request.remove)
    resp = EMPTY_HEADER_OPS
    if h.response is not None:
        resp = make_header_ops(h.response.set, h.response.add, h.response.remove)
    return req, resp, authority


def _dest_port(
    ctx: RouteContext, res: VirtualService, path: Path, fqdn: str, dest: DestinationSpec, vh_port: int | None
) -> int:
    if dest.port is not None and dest.port.number is not None:
        return int(dest.port.number)
    svc = ctx.service(fqdn)
    if svc is not None:
        nums = svc.port_numbers()
        if len(nums) == 1:
            return nums[0]
        if vh_port is not None and vh_port in nums:
            return vh_port
        raise build_error(
            res,
            (*path, "port"),
            f"destination port is required: {fqdn} has several ports ({', '.join(map(str, nums))})",
        )
    if vh_port is not None:
        return vh_port
    raise build_error(
        res, (*path, "port"), f"destination port is required: {fqdn} is not declared by a ServiceEntry"
    )


def _resolve_dest(
    ctx: RouteContext, res: VirtualService, path: Path, dest: DestinationSpec, vh_port: int | None
) -> tuple[str, str, int, str]:
    ns = res.metadata.namespace
    fqdn = to_fqdn(dest.host, ns)
    port = _dest_port(ctx, res, path, fqdn, dest, vh_port)
    subset = dest.subset or ""
    if subset and not ctx.has_subset(fqdn, subset):
        raise build_error(
            res, (*path, "subset"), f"subset {subset!r} of {fqdn} is not defined by any DestinationRule"
        )
    if ctx.service(fqdn) is None:
        log.warning(
            "%s: %s: host %s is not declared by a ServiceEntry; requests get 503", res.ref, path, fqdn
        )
    name = ctx.ensure_cluster(fqdn, port, subset)
    return name, fqdn, port, subset


def _destinations(
    ctx: RouteContext, res: VirtualService, path: Path, http: HTTPRoute, vh_port: int | None
) -> tuple[Destination, ...]:
    out: list[Destination] = []
    single = len(http.route) == 1
    for j, rd in enumerate(http.route):
        dpath = (*path, "route", j, "destination")
        name, fqdn, port, subset = _resolve_dest(ctx, res, dpath, rd.destination, vh_port)
        rq, rs, _auth = _headers(rd.headers)
        weight = 100 if single else (rd.weight or 0)
        out.append(Destination(name, fqdn, port, subset, weight, rq, rs))
    if out and all(d.weight == 0 for d in out):
        out = [dataclasses.replace(d, weight=1) for d in out]  # no weights given: equal shares
    return tuple(d for d in out if d.weight > 0)


def _mirrors(
    ctx: RouteContext, res: VirtualService, path: Path, http: HTTPRoute, vh_port: int | None
) -> tuple[Mirror, ...]:
    out: list[Mirror] = []
    if http.mirror is not None:
        # The model has already copied a deprecated int ``mirrorPercent`` into ``mirrorPercentage``.
        pct = 100.0 if http.mirror_percentage is None else http.mirror_percentage.value
        name, fqdn, port, subset = _resolve_dest(ctx, res, (*path, "mirror"), http.mirror, vh_port)
        out.append(Mirror(name, fqdn, port, subset, pct))
    for j, m in enumerate(http.mirrors):
        name, fqdn, port, subset = _resolve_dest(
            ctx, res, (*path, "mirrors", j, "destination"), m.destination, vh_port
        )
        out.append(Mirror(name, fqdn, port, subset, 100.0 if m.percentage is None else m.percentage.value))
    return tuple(out)


def _rate_limit(ctx: RouteContext, fqdn: str, route_name: str) -> TokenBucket | None:
    for lrl in ctx.rate_limits:
        spec = lrl.spec
        if spec.hosts and not any(host_matches(to_fqdn(h, lrl.metadata.namespace), fqdn) for h in spec.hosts):
            continue
        if spec.routes and route_name not in spec.routes:
            continue
        tb = spec.token_bucket
        return TokenBucket(tb.max_tokens, tb.tokens_per_fill, tb.fill_interval)
    return None


def _direct_body(dr: HTTPDirectResponse) -> bytes:
    body = dr.body
    if body is None:
        return b""
    if body.string is not None:
        return body.string.encode()
    if body.bytes is not None:
        return base64.b64decode(body.bytes)
    return b""


def compile_http_route(
    ctx: RouteContext, res: VirtualService, i: int, http: HTTPRoute, fqdn: str, vh_port: int | None
) -> list[Entry]:
    """One HTTPRoute -> one entry per applicable match block (or one catch-all entry)."""
    path: Path = ("spec", "http", i)
    req_ops, resp_ops, header_authority = _headers(http.headers)
    kind: Literal["forward", "redirect", "direct"] = "forward"
    redirect = None
    direct_status, direct_body = 200, b""
    dests: tuple[Destination, ...] = ()
    if http.redirect is not None:
        r = http.redirect
        kind = "redirect"
        redirect = RedirectAction(r.redirect_code or 301, r.uri, r.authority, r.port, r.derive_port, r.scheme)
    elif http.direct_response is not None:
        kind = "direct"
        direct_status, direct_body = http.direct_response.status, _direct_body(http.direct_response)
    else:
        dests = _destinations(ctx, res, path, http, vh_port)
        if not dests:
            raise build_error(
                res, (*path, "route"), "a forwarding route needs at least one destination with weight > 0"
            )
    rewrite_uri = rewrite_regex = None
    rewrite_authority = header_authority
    if http.rewrite is not None:
        rewrite_uri = http.rewrite.uri
        if http.rewrite.authority:
            rewrite_authority = http.rewrite.authority
        rr = http.rewrite.uri_regex_rewrite
        if rr is not None:
            try:
                rewrite_regex = (compile_regex(rr.match, "match"), rr.rewrite)
            except MatchCompileError as exc:
                raise build_error(res, (*path, "rewrite", "uriRegexRewrite", exc.field), str(exc)) from None
    try:
        cors = cors_policy_from(http.cors_policy, "corsPolicy")
    except MatchCompileError as exc:
        raise build_error(res, (*path, *exc.field.split(".")), str(exc)) from None
    name = http.name or ""
    route = Route(
        name=name,
        virtual_host=fqdn,
        kind=kind,
        destinations=dests,
        cum_weights=_cumulative(dests),
        redirect_action=redirect,
        direct_status=direct_status,
        direct_body=direct_body,
        rewrite_uri=rewrite_uri,
        rewrite_regex=rewrite_regex,
        rewrite_authority=rewrite_authority,
        timeout=http.timeout,
        retry=retry_policy_from(http.retries),
        mirrors=_mirrors(ctx, res, path, http, vh_port) if kind == "forward" else (),
        port=vh_port,
        **_filters(
            _rate_limit(ctx, fqdn, name),
            cors,
            fault_policy_from(http.fault),
            req_ops,
            resp_ops,
            dests,
            ctx.plugin_filters(vh_port),
        ),
    )
    base_desc = _describe(route, res, i)
    if not http.match:
        return [((), dataclasses.replace(route, described={**base_desc, "match": {"prefix": "/"}}))]
    entries: list[Entry] = []
    for k, m in enumerate(http.match):
        if m.port is not None and vh_port is not None and m.port != vh_port:
            continue  # Istio: a match on another port does not apply to this listener port
        if m.gateways and "mesh" not in m.gateways:
            continue  # this block is for gateways only, not sidecars
        if m.source_labels and any(ctx.source_labels.get(k) != v for k, v in m.source_labels.items()):
            continue  # for other workloads' requests, not this one's
        if m.source_namespace and m.source_namespace != ctx.source_namespace:
            continue
        try:
            preds = compile_match(m)
        except MatchCompileError as exc:
            raise build_error(res, (*path, "match", k, *exc.field.split(".")), str(exc)) from None
        match_kind, prefix = None, "/"
        if m.uri is not None:
            match_kind = m.uri.kind
            if m.uri.prefix is not None:  # at most one of exact, prefix, regex is set (StringMatch)
                prefix = m.uri.prefix
        rname = f"{name}.{m.name}" if name and m.name else (name or m.name)
        matched = dataclasses.replace(
            route,
            name=rname,
            match_kind=match_kind,
            match_prefix=prefix,
            described={**base_desc, "name": rname, "match": describe_match(m)},
        )
        entries.append((preds, matched))
    return entries


def _cumulative(dests: tuple[Destination, ...]) -> tuple[int, ...]:
    total, out = 0, []
    for d in dests:
        total += d.weight
        out.append(total)
    return tuple(out)


def _describe(route: Route, res: VirtualService, i: int) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": route.name,
        "source": f"{res.ref} spec.http[{i}]",
        "kind": route.kind,
    }
    if route.kind == "forward":
        total = route.cum_weights[-1] if route.cum_weights else 0
        d["destinations"] = [
            {"cluster": x.cluster, "weight": round(100.0 * x.weight / total, 2) if total else 0}
            for x in route.destinations
        ]
        for x, dd in zip(route.destinations, d["destinations"], strict=True):
            if not x.request_headers.empty or not x.response_headers.empty:
                dd["headers"] = {
                    "request": x.request_headers.describe(),
                    "response": x.response_headers.describe(),
                }
        d["timeout"] = route.timeout
        d["retries"] = route.retry.describe()
    elif route.kind == "redirect" and route.redirect_action is not None:
        d["redirect"] = {k: v for k, v in dataclasses.asdict(route.redirect_action).items() if v is not None}
    else:
        d["directResponse"] = {"status": route.direct_status, "bodyBytes": len(route.direct_body)}
    if route.rewrite_uri is not None or route.rewrite_regex is not None or route.rewrite_authority:
        d["rewrite"] = {
            "uri": route.rewrite_uri,
            "uriRegexRewrite": route.rewrite_regex[0].pattern if route.rewrite_regex else None,
            "authority": route.rewrite_authority,
        }
    fc = route.filter_config
    ops = fc.get(HEADER_OPS)
    if isinstance(ops, RouteHeaderOps) and (not ops.request.empty or not ops.response.empty):
        d["headers"] = {"request": ops.request.describe(), "response": ops.response.describe()}
    fault = fc.get(FAULT)
    if isinstance(fault, FaultPolicy):
        d["fault"] = fault.describe()
    if route.mirrors:
        d["mirrors"] = [{"cluster": m.cluster, "percentage": m.percent} for m in route.mirrors]
    cors = fc.get(CORS)
    if isinstance(cors, CorsPolicy):
        d["corsPolicy"] = cors.describe()
    bucket = fc.get(LOCAL_RATELIMIT)
    if isinstance(bucket, TokenBucket):
        d["rateLimit"] = bucket.describe()
    if route.chain:
        d["filters"] = route.chain.describe()
    return d


def _filters(
    limiter: TokenBucket | None,
    cors: CorsPolicy | None,
    fault: FaultPolicy | None,
    req_ops: HeaderOps,
    resp_ops: HeaderOps,
    dests: tuple[Destination, ...],
    plugins: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``filter_config`` and ``chain`` of a route: an entry for each built-in its config turns on,
    and the filters of the Plugins that run on it."""
    config: dict[str, object] = {}
    if limiter is not None:
        config[LOCAL_RATELIMIT] = limiter
    if cors is not None:
        config[CORS] = cors
    if fault is not None:
        config[FAULT] = fault
    dest_req = any(not d.request_headers.empty for d in dests)
    dest_resp = any(not d.response_headers.empty for d in dests)
    if not req_ops.empty or not resp_ops.empty or dest_req or dest_resp:
        config[HEADER_OPS] = RouteHeaderOps(req_ops, resp_ops, dest_req, dest_resp)
    if plugins:
        config.update(plugins)
    return {"filter_config": config, "chain": build_chain(config)}


def default_route(ctx: RouteContext, fqdn: str, port: int) -> Route:
    """Istio's route for a service no VirtualService names: everything to its default cluster."""
    name = ctx.ensure_cluster(fqdn, port, "")
    dest = Destination(name, fqdn, port, "", 100)
    route = Route(
        name="default",
        virtual_host=fqdn,
        destinations=(dest,),
        cum_weights=(100,),
        retry=DEFAULT_RETRY,
        port=port,
        **_filters(
            _rate_limit(ctx, fqdn, "default"),
            None,
            None,
            EMPTY_HEADER_OPS,
            EMPTY_HEADER_OPS,
            (),
            ctx.plugin_filters(port),
        ),
    )
    desc: dict[str, Any] = {
        "name": "default",
        "source": "default route",
        "kind": "forward",
        "match": {"prefix": "/"},
        "destinations": [{"cluster": name, "weight": 100.0}],
        "timeout": None,
        "retries": route.retry.describe(),
    }
    if route.chain:
        desc["filters"] = route.chain.describe()
    return dataclasses.replace(route, described=desc)
