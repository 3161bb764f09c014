"""Semantic checks for meshbus.io/v1 MeshConfig: Istio's checks of the extension providers meshbus reads.

istio/istio pilot/pkg/security/authz/builder/extauthz.go (the provider name, ``statusOnError``,
``pathPrefix``, a lone ``*`` in header lists) and pkg/config/validation/agent (the service).
"""

from __future__ import annotations

import re
from typing import Final

from meshbus.bus.config.mesh_config import ExtAuthzGrpc, ExtAuthzHttp, MeshbusAuthz
from meshbus.bus.config.resources import MeshConfig, Resource
from meshbus.bus.config.validation.findings import Findings

# Envoy's type.v3.StatusCode values (Istio accepts exactly these for statusOnError).
STATUS_CODES: Final = frozenset(
    {0, 100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308,
     400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422,
     423, 424, 426, 428, 429, 431, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511}
)  # fmt: skip
_PROVIDER_NAME: Final = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HEADER_LISTS: Final = (
    ("includeRequestHeadersInCheck", "include_request_headers_in_check"),
    ("headersToUpstreamOnAllow", "headers_to_upstream_on_allow"),
    ("headersToDownstreamOnDeny", "headers_to_downstream_on_deny"),
    ("headersToDownstreamOnAllow", "headers_to_downstream_on_allow"),
)


def validate(resource: Resource, f: Findings) -> None:
    if not isinstance(resource, MeshConfig):
        return
    for i, provider in enumerate(resource.spec.extension_providers):
        path: list[str | int] = ["spec", "extensionProviders", i]
        if not _PROVIDER_NAME.match(provider.name):
            f.error(
                [*path, "name"],
                "a provider name is a DNS-1123 label: lowercase letters, digits and '-', at most 63",
                provider.name,
            )
        for alias, cfg in (
            ("envoyExtAuthzHttp", provider.envoy_ext_authz_http),
            ("envoyExtAuthzGrpc", provider.envoy_ext_authz_grpc),
            ("meshbusAuthz", provider.meshbus_authz),
        ):
            if cfg is not None:
                _authorizer(f, [*path, alias], cfg)


def _authorizer(f: Findings, path: list[str | int], cfg: ExtAuthzHttp | ExtAuthzGrpc | MeshbusAuthz) -> None:
    status = cfg.status_on_error
    if status is not None and (
        not (status.isascii() and status.isdigit()) or int(status) not in STATUS_CODES
    ):
        f.error([*path, "statusOnError"], "must be an HTTP status code Envoy knows (e.g. 403, 503)", status)
    if not isinstance(cfg, ExtAuthzHttp):
        return
    prefix = cfg.path_prefix
    if prefix is not None and not prefix.startswith("/"):
        f.error([*path, "pathPrefix"], "pathPrefix must begin with '/'", prefix)
    for alias, attr in _HEADER_LISTS:
        for k, name in enumerate(getattr(cfg, attr)):
            if name == "*":
                f.error(
                    [*path, alias, k],
                    'a single wildcard ("*") is not supported: use a prefix or suffix match',
                )
