"""RequestAuthentication and RateLimit -> the filters of the inbound route (sans-IO).

Which resources apply to this workload is Istio's policy scope: a resource in the workload's own
namespace applies to it when it has no selector or its selector's labels are all among the
workload's; one in the root namespace (MeshConfig ``rootNamespace``, default ``istio-system``)
applies the same way to workloads of every namespace. In mesh mode discovery sends a proxy only the
resources that select it, and the proxy checks again (a standalone proxy has only this check).

Every RequestAuthentication in scope contributes its ``jwtRules`` to one JWT filter (Istio merges
them into one Envoy jwt_authn config); every RateLimit its ``rules`` to one global rate limit filter.
The compiled configs are reused, caches and all, while the resources they came from are the very
same objects (the proxy's resource cache keeps unchanged resources identical across snapshots). A
new JWT config takes over the verified tokens of the providers it has unchanged (a JWKS rotation
drops only its provider's: ``JwtAuthnConfig.adopt``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from meshbus.bus.config.meshbus_kinds import DEFAULT_ROOT_NAMESPACE
from meshbus.bus.config.proxy_kinds import MeshConfig, RateLimit, RequestAuthentication, Resource
from meshbus.bus.config.security import JWTRule
from meshbus.proxy.filters.builtin import GLOBAL_RATELIMIT
from meshbus.proxy.filters.jwt_authn import (
    ALWAYS_SPACE_DELIMITED,
    COOKIE,
    DEFAULT_LOCATIONS,
    HEADER,
    JWT_AUTHN,
    PARAM,
    JwtAuthnConfig,
    JwtProvider,
    Location,
)
from meshbus.proxy.filters.jwt_keys import VerifyKey, parse_jwks

if TYPE_CHECKING:
    from meshbus.proxy.filters.global_ratelimit import GlobalRateLimitConfig

log = logging.getLogger(__name__)

POLICY_FILTERS = (JWT_AUTHN, GLOBAL_RATELIMIT)
"""The filter names this module puts on the inbound route (Plugins put theirs beside them)."""
R = TypeVar("R", RequestAuthentication, RateLimit)


def root_namespace(resources: Sequence[Resource]) -> str:
    for res in resources:
        if isinstance(res, MeshConfig):
            return res.spec.root_namespace
    return DEFAULT_ROOT_NAMESPACE


def applies(
    res: RequestAuthentication | RateLimit, namespace: str, labels: Mapping[str, str], root: str
) -> bool:
    """Istio's policy scope for one workload (module doc)."""
    ns = res.metadata.namespace
    if ns != namespace and ns != root:
        return False
    sel = res.spec.selector
    wanted = sel.match_labels if sel is not None else {}
    return all(labels.get(k) == v for k, v in wanted.items())


def inbound_filters(
    resources: Sequence[Resource],
    namespace: str,
    labels: Mapping[str, str] | None,
    previous: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """``Route.filter_config`` entries of the inbound route: JWT authn and global rate limit."""
    labels = labels or {}
    root = root_namespace(resources)
    ras: list[RequestAuthentication] = []
    rls: list[RateLimit] = []
    for res in resources:
        if isinstance(res, RequestAuthentication) and applies(res, namespace, labels, root):
            ras.append(res)
        elif isinstance(res, RateLimit) and applies(res, namespace, labels, root):
            rls.append(res)
    previous = previous or {}
    out: dict[str, object] = {}
    if any(ra.spec.jwt_rules for ra in ras):
        old = previous.get(JWT_AUTHN)
        out[JWT_AUTHN] = _reuse(old, ras, lambda rs: jwt_config(rs, old))
    if rls:
        out[GLOBAL_RATELIMIT] = _reuse(previous.get(GLOBAL_RATELIMIT), rls, rate_limit_config)
    return out


def _reuse(old: object, resources: list[R], compile_: Callable[[list[R]], object]) -> object:
    """``old`` when it was compiled from these very resource objects, else a fresh compile."""
    resources.sort(key=lambda r: (r.metadata.namespace, r.metadata.name))
    sources: Sequence[object] = getattr(old, "sources", ())
    if len(sources) == len(resources) and all(x is y for x, y in zip(sources, resources, strict=True)):
        return old
    return compile_(resources)


# -- RequestAuthentication


def jwt_config(ras: Sequence[RequestAuthentication], previous: object = None) -> JwtAuthnConfig:
    """The JWT config of ``ras``; with ``previous`` (the config it replaces), its cache entries of
    unchanged providers."""
    providers: list[JwtProvider] = []
    seen: dict[str, str] = {}
    for ra in ras:
        ref = f"{ra.metadata.namespace}/{ra.metadata.name}"
        for i, rule in enumerate(ra.spec.jwt_rules):
            where = f"RequestAuthentication {ref} jwtRules[{i}]"
            if rule.issuer in seen:
                # Istio leaves it to Envoy which of two rules for one issuer checks a token: the first.
                log.warning(
                    "%s: issuer %s is also in %s; that rule applies", where, rule.issuer, seen[rule.issuer]
                )
                continue
            seen[rule.issuer] = where
            providers.append(_provider(rule, where))
    config = JwtAuthnConfig(tuple(providers), sources=tuple(ras))
    if isinstance(previous, JwtAuthnConfig):
        config.adopt(previous)
    return config


def _provider(rule: JWTRule, where: str) -> JwtProvider:
    keys: tuple[VerifyKey, ...] | None = None
    if rule.jwks:
        # Inline keys: the rule's own, or those meshbus-policy fetched from jwksUri / the issuer's
        # OIDC discovery, which discovery puts here (Istio too ignores jwksUri when jwks is set).
        try:
            keys, problems = parse_jwks(rule.jwks)
        except ValueError as exc:
            log.warning("%s: %s: tokens of issuer %s get 401", where, exc, rule.issuer or "(any)")
        else:
            for problem in problems:
                log.warning("%s: jwks %s", where, problem)
    else:
        log.warning(
            "%s: no keys for issuer %s yet (meshbus-policy fetches %s): its tokens get 401 until they come",
            where,
            rule.issuer or "(any)",
            rule.jwks_uri or "the issuer's OIDC discovery document",
        )
    locations: list[Location] = [(HEADER, h.name.lower(), h.prefix) for h in rule.from_headers]
    locations += [(PARAM, p, "") for p in rule.from_params]
    locations += [(COOKIE, c, "") for c in rule.from_cookies]
    return JwtProvider(
        issuer=rule.issuer,
        audiences=frozenset(rule.audiences),
        keys=keys,
        locations=tuple(locations) or DEFAULT_LOCATIONS,
        forward=rule.forward_original_token,
        payload_header=rule.output_payload_to_header or None,
        claim_headers=tuple((c.header, c.claim) for c in rule.output_claim_to_headers),
        space_delimited=frozenset((*ALWAYS_SPACE_DELIMITED, *rule.space_delimited_claims)),
        jwks=rule.jwks or "" if keys is not None else "",
        source=where,
    )


# -- RateLimit


def rate_limit_config(rls: Sequence[RateLimit]) -> GlobalRateLimitConfig:
    # here, not at the top: only a workload with a RateLimit in scope carries the filter (builtin.LAZY_FILTERS)
    from meshbus.proxy.filters.global_ratelimit import (
        DEFAULT_TIMEOUT,
        CidrSel,
        ClientSel,
        GlobalRateLimitConfig,
        GlobalRule,
        HeaderSel,
    )

    rules: list[GlobalRule] = []
    # Several RateLimits on one workload: the strictest failure mode and the shortest wait win.
    fail_open = all(rl.spec.failure_mode == "Open" for rl in rls)
    timeouts = [rl.spec.timeout for rl in rls if rl.spec.timeout is not None]
    timeout = min(timeouts) if timeouts else DEFAULT_TIMEOUT
    for rl in rls:
        ref = f"{rl.metadata.namespace}/{rl.metadata.name}"
        for i, rule in enumerate(rl.spec.rules):
            selectors = tuple(
                ClientSel(
                    tuple(
                        HeaderSel(h.name.lower(), h.type == "Distinct", h.value, h.invert)
                        for h in sel.headers
                    ),
                    None
                    if sel.source_cidr is None
                    else CidrSel(
                        ipaddress.ip_network(sel.source_cidr.value, strict=False),
                        sel.source_cidr.type == "Distinct",
                    ),
                )
                for sel in rule.client_selectors
            )
            rules.append(
                GlobalRule(
                    f"{ref}/{i}",
                    rule.limit.requests,
                    rule.limit.unit,
                    selectors,
                    rule.shadow_mode,
                    rule.name or "",
                )
            )
    return GlobalRateLimitConfig(tuple(rules), fail_open, timeout, tuple(rls))


def describe(filter_config: Mapping[str, object]) -> dict[str, Any]:
    """What ``config_dump`` shows of these filters on the inbound route."""
    out: dict[str, Any] = {}
    jwt_cfg = filter_config.get(JWT_AUTHN)
    if isinstance(jwt_cfg, JwtAuthnConfig):
        out["jwtRules"] = jwt_cfg.describe()
    rl_cfg = filter_config.get(GLOBAL_RATELIMIT)
    if rl_cfg is not None:
        from meshbus.proxy.filters.global_ratelimit import GlobalRateLimitConfig

        if isinstance(rl_cfg, GlobalRateLimitConfig):
            out["rateLimit"] = rl_cfg.describe()
    return out
