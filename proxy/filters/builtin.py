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
from meshbus.proxy.filters.global_ratelimit import (
    GLOBAL_RATELIMIT,
    GlobalRateLimitConfig,
    GlobalRateLimitFilter,
)
from meshbus.proxy.filters.headerops import HEADER_OPS, HeaderOpsFilter, RouteHeaderOps
from meshbus.proxy.filters.jwt_authn import JWT_AUTHN, JwtAuthnConfig, JwtAuthnFilter
from meshbus.proxy.filters.ratelimit import LOCAL_RATELIMIT, LocalRateLimitFilter, TokenBucket

BUILTIN_FILTERS: Final[dict[str, tuple[type, Callable[[Any], HttpFilter]]]] = {
    LOCAL_RATELIMIT: (TokenBucket, LocalRateLimitFilter),
    CORS: (CorsPolicy, CorsFilter),
    FAULT: (FaultPolicy, FaultFilter),
    HEADER_OPS: (RouteHeaderOps, HeaderOpsFilter),
    JWT_AUTHN: (JwtAuthnConfig, JwtAuthnFilter),
    GLOBAL_RATELIMIT: (GlobalRateLimitConfig, GlobalRateLimitFilter),
    AUTHORIZATION: (AuthzConfig, AuthzFilter),
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
        if entry is None:
            raise ValueError(
                f"meshbus: no filter named {name!r} (known: {', '.join(sorted(BUILTIN_FILTERS))})"
            )
        config_type, factory = entry
        if not isinstance(config, config_type):
            raise TypeError(
                f"meshbus: filter {name!r} takes {config_type.__name__} config, got {type(config).__name__}"
            )
        filters.append(factory(config))
    return FilterChain(filters)
