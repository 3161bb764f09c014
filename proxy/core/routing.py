"""The compiled route table: authority -> virtual host -> first matching route (Istio order).

Everything here is built once per config by route_builder.py; per request, ``RouteTable.match``
costs one dict lookup for the authority and, per candidate route, only the predicates that route's
match block has (none for a catch-all). Routes are immutable; the only mutable things they hold are
token buckets, which must persist for the life of the config.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from meshbus.bus.config.hosts import split_authority
from meshbus.proxy.core.match import PATH_PREFIX, ReqPred, pred_needs_header, pred_shape
from meshbus.proxy.core.retry import DEFAULT_RETRY, RetryPolicy
from meshbus.proxy.filters.chain import EMPTY_CHAIN, FilterChain
from meshbus.proxy.filters.headerops import EMPTY_HEADER_OPS, HeaderOps


# init=False with the __init__ below: one is made per request, and compiled, mypyc runs a
# dataclass-generated __init__ as interpreted Python; this one is native.
@dataclass(slots=True, init=False)
class RequestView:
    """What routing needs from one request; built by the HTTP adapter."""

    method: str
    path: str  # origin-form target with query ("/a?b=c")
    authority: str  # Host header or absolute-form authority, as sent
    headers: Mapping[str, str]  # lowercase names; duplicates joined with ","
    source_ip: str
    scheme: str = "http"

    def __init__(
        self,
        method: str,
        path: str,
        authority: str,
        headers: Mapping[str, str],
        source_ip: str,
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.path = path
        self.authority = authority
        self.headers = headers
        self.source_ip = source_ip
        self.scheme = scheme


@dataclass(frozen=True, slots=True)
class Destination:
    cluster: str
    host: str  # service FQDN
    port: int
    subset: str = ""
    weight: int = 100
    request_headers: HeaderOps = EMPTY_HEADER_OPS  # apply these, then the route's (Envoy order)
    response_headers: HeaderOps = EMPTY_HEADER_OPS


@dataclass(frozen=True, slots=True)
class Mirror:
    cluster: str
    host: str
    port: int
    subset: str = ""
    percent: float = 100.0

    def should_mirror(self, rand: float) -> bool:
        return rand * 100.0 < self.percent

    @staticmethod
    def shadow_authority(authority: str) -> str:
        """Envoy sends a mirrored request with ``-shadow`` appended to the host."""
        host, sep, port = authority.rpartition(":")
        if sep and port.isascii() and port.isdigit() and (host.endswith("]") or ":" not in host):
            return f"{host}-shadow:{port}"
        return f"{authority}-shadow"


@dataclass(frozen=True, slots=True)
class RedirectAction:
    code: int = 301
    uri: str | None = None
    authority: str | None = None
    port: int | None = None
    derive_port: str | None = None  # FROM_PROTOCOL_DEFAULT | FROM_REQUEST_PORT
    scheme: str | None = None


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    virtual_host: str  # service FQDN (or the VirtualService host) for stats
    kind: Literal["forward", "redirect", "direct"] = "forward"
    destinations: tuple[Destination, ...] = ()
    cum_weights: tuple[int, ...] = ()
    redirect_action: RedirectAction | None = None
    direct_status: int = 200
    direct_body: bytes = b""
    match_kind: str | None = None  # "prefix" | "exact" | "regex" | None (no uri match)
    match_prefix: str = "/"
    rewrite_uri: str | None = None
    rewrite_regex: tuple[re.Pattern[str], str] | None = None
    rewrite_authority: str | None = None
    timeout: float | None = None
    retry: RetryPolicy = DEFAULT_RETRY
    mirrors: tuple[Any, ...] = ()
    port: int | None = None  # virtual host port
    # Per-route filter config, a typed map (filter name -> frozen config; proxy/filters/builtin.py),
    # and the chain made from it once per config version (proxy/filters/chain.py).
    filter_config: Mapping[str, object] = field(default_factory=dict, compare=False, hash=False)
    chain: FilterChain = field(default=EMPTY_CHAIN, compare=False, hash=False, repr=False)
    described: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Derived once: a forward route with no path rewrite, so the proxy can send the upstream request
    # head as received (when no filter asks for header operations) or build it in one pass.
    plain: bool = field(default=False, init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "plain",
            self.kind == "forward" and self.rewrite_uri is None and self.rewrite_regex is None,
        )

    def pick_destination(self, rand: float) -> Destination:
        """Weighted choice; ``rand`` uniform in [0, 1)."""
        dests = self.destinations
        if len(dests) == 1:
            return dests[0]
        cum = self.cum_weights
        i = bisect_right(cum, rand * cum[-1])
        return dests[i if i < len(dests) else -1]

    def rewrite_path(self, req: RequestView) -> str | None:
        """The upstream path after ``rewrite``, or None when the route does not rewrite it."""
        if self.rewrite_regex is not None:
            pattern, sub = self.rewrite_regex
            path, q, query = req.path.partition("?")
            return pattern.sub(sub, path) + q + query
        new = self.rewrite_uri
        if new is None:
            return None
        path = req.path
        if self.match_kind == "exact" or self.match_kind == "regex":
            _, q, query = path.partition("?")
            return new + q + query
        # Prefix match (a route without a uri match is a "/" prefix in Envoy): swap the prefix.
        return new + path[len(self.match_prefix) :]

    def redirect(self, req: RequestView) -> tuple[int, str]:
        """(status, Location) for a redirect route."""
        r = self.redirect_action
        if r is None:
            raise ValueError("meshbus: route is not a redirect")
        scheme = r.scheme or req.scheme
        host, port = split_authority(r.authority or req.authority)
        if r.port is not None:
            port = r.port
        elif r.derive_port == "FROM_PROTOCOL_DEFAULT":
            port = None
        elif r.derive_port == "FROM_REQUEST_PORT":
            port = split_authority(req.authority)[1] or self.port
        elif scheme != req.scheme and port == _DEFAULT_PORTS.get(req.scheme):
            port = None  # Envoy drops the old scheme's default port on a scheme change
        if port is not None and port == _DEFAULT_PORTS.get(scheme):
            port = None
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        hostport = host if port is None else f"{host}:{port}"
        path = req.path
        if r.uri is not None:
            # Envoy path_redirect: a query in the new uri replaces the request's, else it is kept.
            path = r.uri if "?" in r.uri else r.uri + _query_part(req.path)
        return r.code, f"{scheme}://{hostport}{path}"


def _query_part(path: str) -> str:
    i = path.find("?")
    return "" if i < 0 else path[i:]


def _combine(preds: tuple[ReqPred, ...]) -> ReqPred | None:
    """One callable per match block: None (catch-all), the only predicate, or an AND of them."""
    if not preds:
        return None
    if len(preds) == 1:
        return preds[0]

    def all_of(req: RequestView) -> bool:
        for p in preds:
            if not p(req):
                return False
        return True

    return all_of


_PREFIX_RUN: Final = (
    3  # (_PREFIX_RUN, (prefix, ...), ((prefix, route), ...), None): consecutive PATH_PREFIX entries
)


def _prefix_runs(scan: list[tuple[int, Any, Any, Any]]) -> tuple[tuple[int, Any, Any, Any], ...]:
    """Fold each run of consecutive uri-prefix entries into one, keeping first-match order inside it."""
    out: list[tuple[int, Any, Any, Any]] = []
    i = 0
    while i < len(scan):
        j = i
        while j < len(scan) and scan[j][0] == PATH_PREFIX:
            j += 1
        if j - i >= 2:
            run = scan[i:j]
            out.append((_PREFIX_RUN, tuple(e[1] for e in run), tuple((e[1], e[3]) for e in run), None))
            i = j
        else:
            out.append(scan[i])
            i += 1
    return tuple(out)


class VirtualHost:
    """Routes for one service port, in Istio first-match order."""

    __slots__ = (
        "_entries",
        "_hnames",
        "_only",
        "_scan",
        "_scan_nohdr",
        "domains",
        "fqdn",
        "name",
        "port",
        "routes",
    )

    def __init__(
        self,
        fqdn: str,
        port: int | None,
        entries: list[tuple[tuple[ReqPred, ...], Route]],
        domains: list[str] | None = None,
    ) -> None:
        self.fqdn = fqdn
        self.port = port
        self.name = fqdn if port is None else f"{fqdn}:{port}"
        self.domains = domains or []
        self._entries = tuple((_combine(preds), route) for preds, route in entries)
        # The scan match() runs: (shape, a, b, route); shape 0 = catch-all, PATH_PREFIX/HEADER_EXACT are
        # tested inline (no call), -1 = call ``a(req)``. Plus the same scan without the entries that need
        # a header present, used when the request carries none of those headers (the common case: a
        # canary header absent), so those entries cost nothing.
        scan: list[tuple[int, Any, Any, Route, frozenset[str]]] = []
        for preds, route in entries:
            needs = frozenset(n for n in map(pred_needs_header, preds) if n is not None)
            if not preds:
                scan.append((0, None, None, route, needs))
                continue
            shape = pred_shape(preds[0]) if len(preds) == 1 else None
            if shape is not None:
                scan.append((shape[0], shape[1], shape[2], route, needs))
            else:
                scan.append((-1, _combine(preds), None, route, needs))
        self._hnames = tuple(sorted(frozenset().union(*(e[4] for e in scan))))
        self._scan = _prefix_runs([e[:4] for e in scan])
        self._scan_nohdr = _prefix_runs([e[:4] for e in scan if not e[4]])
        # Common case: one catch-all route; match() returns it without a loop.
        self._only = entries[0][1] if len(entries) == 1 and not entries[0][0] else None
        seen: dict[int, Route] = {}
        for _, r in entries:
            seen.setdefault(id(r), r)
        self.routes = tuple(seen.values())

    def match(self, req: RequestView) -> Route | None:
        if self._only is not None:
            return self._only
        scan = self._scan
        if self._hnames:
            headers = req.headers
            for n in self._hnames:
                if n in headers:
                    break
            else:
                scan = self._scan_nohdr
        path = req.path
        for shape, a, b, route in scan:
            # Typed operands make each ``startswith`` mypyc's native call; on an Any it is looked up
            # by name on the type at each request (CPython's type attribute cache).
            if shape == _PREFIX_RUN:
                run: tuple[str, ...] = a
                if path.startswith(run):  # one C call rules out the whole run when none matches
                    for prefix, r in b:
                        p: str = prefix
                        if path.startswith(p):
                            return r
            elif shape == PATH_PREFIX:
                pre: str = a
                if path.startswith(pre):
                    return route
            elif shape == 0:
                return route
            elif shape == -1:
                if a(req):
                    return route
            elif req.headers.get(a) == b:  # HEADER_EXACT
                return route
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "domains": self.domains,
            "routes": [r.described for _, r in self._entries],
        }


class RouteTable:
    """authority -> VirtualHost (all aliases precomputed) -> Route."""

    __slots__ = ("_by_authority", "_catch_all", "_wildcards", "virtual_hosts")

    def __init__(
        self,
        virtual_hosts: list[VirtualHost],
        by_authority: dict[str, VirtualHost],
        wildcards: list[tuple[str, VirtualHost]] | None = None,
        catch_all: VirtualHost | None = None,
    ) -> None:
        self.virtual_hosts = tuple(virtual_hosts)
        self._by_authority = by_authority
        # Longest suffix first, as Envoy prefers the most specific wildcard domain.
        self._wildcards = sorted(wildcards or [], key=lambda kv: -len(kv[0]))
        self._catch_all = catch_all

    def match(self, req: RequestView) -> Route | None:
        """Istio first-match; None means no route (404 NR)."""
        vh = self._by_authority.get(req.authority)
        if vh is None:
            vh = self.virtual_host_for(req.authority)
            if vh is None:
                return None
        return vh.match(req)

    def virtual_host_for(self, authority: str) -> VirtualHost | None:
        """Slow path: case, trailing dot, undeclared port, wildcard domains, catch-all."""
        if not self._by_authority and self._catch_all is not None:
            return self._catch_all
        host, port = split_authority(authority)
        d = self._by_authority
        vh = d.get(f"{host}:{port}") if port is not None else d.get(host)
        if vh is None and port is not None:
            vh = d.get(host)
        if vh is not None:
            return vh
        for suffix, wvh in self._wildcards:
            if host.endswith(suffix):
                return wvh
        return self._catch_all

    def describe(self) -> list[dict[str, Any]]:
        return [vh.describe() for vh in self.virtual_hosts]
