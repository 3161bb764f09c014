"""Istio host naming, the one resolver: discovery scopes with it, the proxy routes with it (sans-IO).

Config hosts (``to_fqdn``, ``host_matches``): as Istio's ResolveShortnameToFQDN and host.Name.Matches,
a host without a dot (``reviews``) is a short name resolved in the namespace of the resource that
mentions it (``reviews.default.svc.cluster.local``); a host with a dot, ``*`` and IP addresses are
taken as written; ``*.example.com`` matches every name below example.com, not example.com itself.
Names are compared lowercased and without a trailing dot (DNS names are case-insensitive, and
``example.com.`` is the same host), so every caller agrees on one spelling of each host.

Request authorities (``split_authority``, ``authority_aliases``): a client may reach a Kubernetes-style
service as ``reviews`` (same namespace only), ``reviews.default``, ``reviews.default.svc`` or the full
name, each with or without ``:port``; Istio puts all of those in the Envoy virtual host's domains, and
so does the proxy. The proxy calls ``split_authority`` per request on its slow paths (an authority not
found as sent, redirects), so this module is compiled with the request path (setup.py).
"""

from __future__ import annotations

from typing import Final

CLUSTER_SUFFIX: Final = "svc.cluster.local"
_SVC_SUFFIX: Final = "." + CLUSTER_SUFFIX


def to_fqdn(host: str, namespace: str) -> str:
    """Config host -> FQDN: ``reviews`` in ``default`` -> ``reviews.default.svc.cluster.local``.

    Only names without a dot expand. An empty name stays empty and an IPv6 literal (``fd00::1``: no
    dot, but not a short name) stays as written, as in Istio. Surrounding whitespace is not trimmed:
    validation refuses it, and a name that is not a DNS name must not turn into one here.
    """
    host = host.lower().rstrip(".")
    if "." in host or host == "*" or not host or ":" in host:
        return host
    return f"{host}.{namespace}.{CLUSTER_SUFFIX}"


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` falls under ``pattern``: exact, ``*.suffix`` (any depth below it) or ``*``.

    Both are FQDNs as `to_fqdn` makes them (lowercase). A wildcard ``host`` is matched as a name too:
    ``*.a.example.com`` falls under ``*.example.com``; callers that need Istio's symmetric wildcard
    overlap ask both ways.
    """
    if pattern == "*" or pattern == host:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return False


def looks_external(fqdn: str) -> bool:
    """A name outside the mesh's cluster domain (``www.googleapis.com``), judged by its suffix."""
    return not fqdn.endswith(_SVC_SUFFIX) and "." in fqdn


def split_authority(authority: str) -> tuple[str, int | None]:
    """``Host:8080`` -> ("host", 8080); ``[::1]:80`` -> ("::1", 80); a bad port counts as none.

    Lowercased, trailing dot dropped (``example.com.:80`` -> ("example.com", 80)), as `to_fqdn` spells
    hosts; a bare IPv6 literal (``::1``) has no port.
    """
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
    if port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536:
        return host, int(port_text)
    return host, None


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
