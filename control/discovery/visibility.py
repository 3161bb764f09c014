"""Which hosts a proxy may call: Istio Sidecar ``egress[].hosts`` (sans-IO).

An egress host is ``namespace/dnsName``: namespace ``.`` is the Sidecar's own, ``*`` any, ``~``
none; dnsName is ``*``, ``*.suffix`` or a name (short names resolve in that namespace). Without a
Sidecar (or with one without egress) a proxy sees every host, Istio's default.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshbus.bus.config.hosts import host_matches, to_fqdn
from meshbus.bus.config.resources import Sidecar

from .model import ConfigEntry


def namespace_of(fqdn: str) -> str | None:
    parts = fqdn.split(".")
    if len(parts) == 5 and parts[2:] == ["svc", "cluster", "local"]:
        return parts[1]
    return None


@dataclass(frozen=True, slots=True)
class Visibility:
    rules: tuple[tuple[str, str], ...] | None = None
    """(namespace, host pattern); None = everything is visible."""

    @classmethod
    def of(cls, sidecar: ConfigEntry | None) -> Visibility:
        if sidecar is None or not isinstance(sidecar.resource, Sidecar):
            return cls(None)
        egress = sidecar.resource.spec.egress
        rules: list[tuple[str, str]] = []
        for listener in egress:
            for item in listener.hosts:
                ns, sep, host = item.partition("/")
                if not sep:
                    ns, host = "*", ns
                if ns == ".":
                    ns = sidecar.namespace
                if ns == "~":
                    continue
                base_ns = sidecar.namespace if ns == "*" else ns
                rules.append((ns, to_fqdn(host, base_ns)))
        return cls(tuple(rules)) if egress else cls(None)

    @property
    def everything(self) -> bool:
        return self.rules is None

    def sees_host(self, host: str, owner_namespace: str) -> bool:
        if self.rules is None:
            return True
        host_ns = namespace_of(host)
        for ns, pattern in self.rules:
            if ns != "*" and ns != owner_namespace and ns != host_ns:
                continue
            if host_matches(pattern, host) or (host.startswith("*") and host_matches(host, pattern)):
                return True
        return False

    def sees(self, entry: ConfigEntry) -> bool:
        return any(self.sees_host(h, entry.namespace) for h in entry.hosts)
