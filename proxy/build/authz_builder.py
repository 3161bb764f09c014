"""The inbound route's authorization: the policies that apply to this workload, compiled (sans-IO).

Uses meshbus.bus.config.authz (the rules meshctl authz uses too) with what only the proxy knows: its
workload (namespace, labels, app port) and its clusters, which say whether a CUSTOM provider's
service can be reached. Compile problems (a provider that cannot be used, a condition meshbus cannot
evaluate) are logged once per build; they never stop it: Istio applies such policies failing closed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from meshbus.bus.config.authz.compile import MeshConfigError, ProviderSpec, Workload, compile_workload
from meshbus.bus.config.proxy_kinds import AuthorizationPolicy, MeshConfig, Resource
from meshbus.proxy.build.cluster_builder import cluster_name
from meshbus.proxy.build.errors import RuntimeBuildError, build_error
from meshbus.proxy.core.cluster import Cluster
from meshbus.proxy.filters.authz import AuthzConfig
from meshbus.proxy.filters.authz_providers import PROVIDER_KINDS

log = logging.getLogger(__name__)


def inbound_authz(
    inputs: Sequence[AuthorizationPolicy | MeshConfig],
    *,
    namespace: str,
    labels: Mapping[str, str],
    app_port: int | None,
    clusters: Mapping[str, Cluster],
) -> AuthzConfig | None:
    """The authorization of the inbound route, or None when no AuthorizationPolicy selects this workload."""

    def resolve(spec: ProviderSpec) -> str | None:
        if spec.kind == "meshbusAuthz":
            return spec.name  # reached over the bus, not through a cluster
        name = cluster_name(spec.port, "", spec.host)
        return name if name in clusters else None

    resources: Sequence[Resource] = inputs
    try:
        compiled = compile_workload(
            resources,
            Workload(namespace, dict(labels), app_port or 0),
            usable_kinds=PROVIDER_KINDS,
            resolve=resolve,
        )
    except MeshConfigError as exc:
        meshes = [r for r in inputs if isinstance(r, MeshConfig)]
        raise build_error(meshes[-1], ("metadata", "name"), str(exc).removeprefix("meshbus: ")) from None
    if compiled is None:
        return None
    for problem in compiled.problems:
        log.warning("authorization: %s", problem)
    return AuthzConfig(compiled, dest_port=app_port or 0)


__all__ = ["RuntimeBuildError", "inbound_authz"]
