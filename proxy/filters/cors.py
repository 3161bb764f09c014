"""CORS as Envoy's cors filter answers it for an Istio ``corsPolicy``.

Only requests carrying ``Origin`` are considered. A preflight is ``OPTIONS`` with ``Origin`` and
``Access-Control-Request-Method``; when the origin is allowed the proxy answers it itself (200 with
the allow-* headers). For an origin that is not allowed, ``unmatchedPreflights: IGNORE`` answers 200
without CORS headers and the default (FORWARD) passes the preflight on to the app. Responses to
allowed actual requests get allow-origin (the request's origin echoed), allow-credentials and
expose-headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from meshbus.proxy.core.match import describe_string_match, string_pred
from meshbus.proxy.filters.chain import (
    BUILTIN,
    HOOK_REQUEST_HEADERS,
    HOOK_RESPONSE_HEADERS,
    FilterContext,
    HttpFilter,
    LocalReply,
)

if TYPE_CHECKING:
    from meshbus.bus.config.virtual_service import CorsPolicy as CorsPolicySpec
    from meshbus.proxy.core.routing import RequestView


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    origin_preds: tuple[Callable[[str], bool], ...]
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool = False
    ignore_unmatched_preflights: bool = False
    described: tuple[tuple[str, Any], ...] = ()

    def origin_allowed(self, origin: str) -> bool:
        return any(p(origin) for p in self.origin_preds)

    def preflight(self, req: RequestView) -> list[tuple[str, str]] | None:
        """Headers of the 200 answer to a preflight, or None when the proxy must not answer it."""
        if req.method != "OPTIONS":
            return None
        h = req.headers
        origin = h.get("origin")
        if origin is None or "access-control-request-method" not in h:
            return None
        if not self.origin_allowed(origin):
            return [] if self.ignore_unmatched_preflights else None
        out = [("access-control-allow-origin", origin)]
        if self.allow_credentials:
            out.append(("access-control-allow-credentials", "true"))
        if self.allow_methods:
            out.append(("access-control-allow-methods", self.allow_methods))
        if self.allow_headers:
            out.append(("access-control-allow-headers", self.allow_headers))
        if self.max_age:
            out.append(("access-control-max-age", self.max_age))
        return out

    def response_headers(self, req: RequestView) -> list[tuple[str, str]]:
        """Headers to add to the upstream's response to an actual (non-preflight) request."""
        origin = req.headers.get("origin")
        if origin is None or not self.origin_allowed(origin):
            return []
        out = [("access-control-allow-origin", origin)]
        if self.allow_credentials:
            out.append(("access-control-allow-credentials", "true"))
        if self.expose_headers:
            out.append(("access-control-expose-headers", self.expose_headers))
        return out

    def describe(self) -> dict[str, Any]:
        return dict(self.described)


def cors_policy_from(spec: CorsPolicySpec | None, field: str) -> CorsPolicy | None:
    """Istio ``corsPolicy`` -> policy. The deprecated ``allowOrigin`` strings arrive as ``allowOrigins``
    exact matches (the model converts them when ``allowOrigins`` is unset, as Istio reads them)."""
    if spec is None:
        return None
    preds: list[Callable[[str], bool]] = []
    origins: list[dict[str, str]] = []
    for i, sm in enumerate(spec.allow_origins):
        p = string_pred(sm, f"{field}.allowOrigins[{i}]")
        if p is not None:
            if sm.exact == "*":
                p = _any
            preds.append(p)
            origins.append(describe_string_match(sm))
    max_age = "" if spec.max_age is None else str(int(spec.max_age))
    return CorsPolicy(
        origin_preds=tuple(preds),
        allow_methods=",".join(spec.allow_methods),
        allow_headers=",".join(spec.allow_headers),
        expose_headers=",".join(spec.expose_headers),
        max_age=max_age,
        allow_credentials=bool(spec.allow_credentials),
        ignore_unmatched_preflights=spec.unmatched_preflights == "IGNORE",
        described=(
            ("allowOrigins", origins),
            ("allowMethods", list(spec.allow_methods)),
            ("allowHeaders", list(spec.allow_headers)),
            ("exposeHeaders", list(spec.expose_headers)),
            ("maxAge", max_age),
            ("allowCredentials", bool(spec.allow_credentials)),
        ),
    )


def _any(_origin: str) -> bool:
    return True


def _exact(value: str) -> Callable[[str], bool]:
    return lambda s: s == value


CORS: Final = "meshbus.filters.http.cors"


class CorsFilter(HttpFilter):
    """Answers allowed preflights itself; adds the allow-* headers to responses for allowed origins
    (to local replies only below 400, as before the chain existed)."""

    def __init__(self, policy: CorsPolicy) -> None:
        super().__init__(CORS, BUILTIN, 20, HOOK_REQUEST_HEADERS | HOOK_RESPONSE_HEADERS)
        self.policy = policy

    def on_request_headers(self, ctx: FilterContext) -> Any:
        if ctx.head.method != "OPTIONS":
            return None
        pre = self.policy.preflight(ctx.view)
        if pre is None:
            return None
        return LocalReply(200, b"", tuple(pre))

    def on_response_headers(self, ctx: FilterContext) -> LocalReply | None:
        if ctx.is_local and ctx.status >= 400:
            return None
        ctx.resp_headers.extend(self.policy.response_headers(ctx.view))
        return None
