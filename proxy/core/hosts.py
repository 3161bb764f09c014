"""Istio host naming: short names, namespace-qualified names and the aliases a request may use.

In Istio a config host without a dot (``reviews``) is a short name resolved in the namespace of the
resource that mentions it (``reviews.default.svc.cluster.local``); any host with a dot is taken as
written. A client may reach a Kubernetes-style service as ``reviews`` (same namespace only),
``reviews.default``, ``reviews.default.svc`` or the full name, each with or without ``:port``; Istio
puts all of those in the Envoy virtual host's domains, and so do we (``authority_aliases``).
"""

from __future__ import annotations

CLUSTER_DOMAIN = "svc.cluster.local"
_SVC_SUFFIX = "." + CLUSTER_DOMAIN


def resolve_host(host: str, namespace: str) -> str:
    """Config host -> FQDN, as Istio's ResolveShortnameToFQDN does (only dotless names expand)."""
    host = host.strip().lower().rstrip(".")
    if host == "*" or "." in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_DOMAIN}"


def split_authority(authority: str) -> tuple[str, int | None]:
    """``Host:8080`` -> ("host", 8080); ``[::1]:80`` -> ("::1", 80); a bad port counts as none."""
    a = authority.strip().lower()
    if a.startswith("["):
        end = a.find("]")
        if end < 0:
            return a, None
        host, rest = a[1:end], a[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port_text = a.rpartition(":")
        if not sep or ":" in host:  # no port, or a bare IPv6 literal
            return a.rstrip("."), None
    host = host.rstrip(".")
    if port_text.isdigit() and 0 < int(port_text) < 65536:
        return host, int(port_text)
    return host, None


def normalize_authority(authority: str, namespace: str) -> tuple[str, int | None]:
    """Request authority -> (fqdn, port) for a proxy in ``namespace``.

    ``reviews`` -> reviews.<namespace>.svc.cluster.local and ``reviews.ns.svc`` gets the cluster
    domain appended. A two-label name (``reviews.default``) is ambiguous with an external host
    (``example.com``), so it is returned as sent; the route table resolves it through its alias
    index, which knows the services.
    """
    host, port = split_authority(authority)
    if host and "." not in host and not host.replace(":", "").isdigit():
        host = f"{host}.{namespace}.{CLUSTER_DOMAIN}"
    elif host.endswith(".svc"):
        host = f"{host}.cluster.local"
    return host, port


def authority_aliases(fqdn: str, proxy_namespace: str) -> list[str]:
    """Every name a client in ``proxy_namespace`` may use for ``fqdn`` (without ports).

    Mirrors Istio's virtual host domains: the short name only from the service's own namespace,
    ``name.ns`` and ``name.ns.svc`` from anywhere, and the FQDN itself.
    """
    aliases = [fqdn]
    if fqdn.endswith(_SVC_SUFFIX):
        parts = fqdn[: -len(_SVC_SUFFIX)].split(".")
        if len(parts) == 2:
            name, ns = parts
            aliases += [f"{name}.{ns}.svc", f"{name}.{ns}"]
            if ns == proxy_namespace:
                aliases.append(name)
    return aliases


def host_matches(pattern: str, host: str) -> bool:
    """Istio host wildcard: ``*`` matches all, ``*.example.com`` any name ending in ``.example.com``."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host
