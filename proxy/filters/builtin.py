"""The built-in filters by name: per-route config (``Route.filter_config``) -> the route's chain.

Each entry maps a filter name to the type of its per-route config and the factory that makes the
filter from it. A name without an entry, or a config of the wrong type, is a build error: the route
would otherwise run without a filter its config asked for. An entry whose value is an HttpFilter
already (a Plugin's, made by proxy/filters/plugins) is taken as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from meshbus.proxy.filters.authz import AUTHORIZATION, AuthzConfig, AuthzFilter
from meshbus.proxy.filters.chain import EMPTY_CHAIN, FilterChain, HttpFilter
from meshbus.proxy.filters.cors import CORS, CorsFilter, CorsPolicy
from meshbus.proxy.filters.fault import FAULT, FaultFilter, FaultPolicy
from meshbus.proxy.filters.headerops import HEADER_OPS, HeaderOpsFilter, RouteHeaderOps
from meshbus.proxy.filters.jwt_authn import JWT_AUTHN, JwtAuthnConfig, JwtAuthnFilter
from meshbus.proxy.filters.ratelimit import LOCAL_RATELIMIT, LocalRateLimitFilter, TokenBucket

BUILTIN_FILTERS: Final[dict[str, tuple[type, Callable[[Any], HttpFilter]]]] = {
    LOCAL_RATELIMIT: (TokenBucket, LocalRateLimitFilter),
    CORS: (CorsPolicy, CorsFilter),
    FAULT: (FaultPolicy, FaultFilter),
    HEADER_OPS: (RouteHeaderOps, HeaderOpsFilter),
    JWT_AUTHN: (JwtAuthnConfig, JwtAuthnFilter),
    AUTHORIZATION: (AuthzConfig, AuthzFilter),
}

GLOBAL_RATELIMIT: Final = "meshbus.filters.http.ratelimit"
"""filters/global_ratelimit.py's name, here so that naming it does not import it (a test keeps them equal)."""


def _global_ratelimit() -> tuple[type, Callable[[Any], HttpFilter]]:
    from meshbus.proxy.filters.global_ratelimit import GlobalRateLimitConfig, GlobalRateLimitFilter

    return GlobalRateLimitConfig, GlobalRateLimitFilter


# Imported when a route first asks for them: a worker without a RateLimit resource does not carry the
# filter, its lease messages and msgpack (~0.3 MB of idle RSS, bench/run.py's 100-service worker).
LAZY_FILTERS: Final[dict[str, Callable[[], tuple[type, Callable[[Any], HttpFilter]]]]] = {
    GLOBAL_RATELIMIT: _global_ratelimit,
}


def build_chain(filter_config: Mapping[str, object]) -> FilterChain:
    """The chain for one route: one filter per entry of its typed config map, in chain order."""
    if not filter_config:
        return EMPTY_CHAIN
    filters = []
    for name, config in filter_config.items():
        if isinstance(config, HttpFilter):  # made already (a Plugin's: proxy/filters/plugins)
            filters.append(config)
            continue
        entry = BUILTIN_FILTERS.get(name)
        if entry is None and name in LAZY_FILTERS:
            entry = LAZY_FILTERS[name]()  # at build time only; the import is done once
        if entry is None:
            known = sorted({*BUILTIN_FILTERS, *LAZY_FILTERS})
            raise ValueError(f"meshbus: no filter named {name!r} (known: {', '.join(known)})")
        config_type, factory = entry
        if not isinstance(config, config_type):
            raise TypeError(
                f"meshbus: filter {name!r} takes {config_type.__name__} config, got {type(config).__name__}"
            )
        filters.append(factory(config))
    return FilterChain(filters)
