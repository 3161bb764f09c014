"""Istio host naming for config: short names resolve in the resource's namespace."""

from __future__ import annotations

CLUSTER_SUFFIX = "svc.cluster.local"


def to_fqdn(host: str, namespace: str) -> str:
    """``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``; dotted names are kept.

    As in Istio (ResolveShortnameToFQDN), only names without a dot are expanded; ``*`` stays ``*``.
    """
    host = host.lower().rstrip(".")
    if "." in host or host == "*" or not host:
        return host
    return f"{host}.{namespace}.{CLUSTER_SUFFIX}"


def host_matches(pattern: str, host: str) -> bool:
    """Whether FQDN ``host`` falls under ``pattern`` (exact, ``*.suffix`` or ``*``)."""
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False


def looks_external(fqdn: str) -> bool:
    """A name outside the mesh's cluster domain (``www.googleapis.com``), judged by its suffix."""
    return not fqdn.endswith("." + CLUSTER_SUFFIX) and "." in fqdn
