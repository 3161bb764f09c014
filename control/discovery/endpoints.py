"""Registered workloads -> one synthesized ServiceEntry per service (sans-IO).

The proxy builds clusters from ServiceEntry endpoints in standalone mode; discovery speaks the
same language, so a mesh-mode snapshot is nothing but config the proxy already understands. The
synthesized resource is named ``mesh-registry-<service>`` in the service's namespace and labelled
``meshbus.io/source: registry``; endpoints point at each workload's inbound listener.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from meshbus.bus.schemas.discovery import Register

from .model import ConfigEntry
from .registry import ServiceKey, service_host

SOURCE_LABEL = "meshbus.io/source"
NAME_PREFIX = "mesh-registry-"


def synthesize(key: ServiceKey, workloads: Sequence[Register], revision: int = 0) -> ConfigEntry | None:
    """The ServiceEntry for one service's registered workloads (None when it has none).

    Raises ValueError when the registrations do not make a valid one (a port out of range, a service
    name that is no DNS label): `ConfigEntry.from_value` validates it as proxies will.
    """
    if not workloads:
        return None
    namespace, service = key
    ports: dict[str, int] = {}
    for w in workloads:
        for name, number in w.ports.items():
            ports.setdefault(name, number)
    endpoints: list[dict[str, Any]] = []
    for w in sorted(workloads, key=lambda w: (w.address, w.inbound_port, w.node_id)):
        ep: dict[str, Any] = {"address": w.address, "labels": dict(sorted(w.labels.items()))}
        if w.inbound_port:
            ep["ports"] = {name: w.inbound_port for name in sorted(w.ports)}
        else:
            ep["ports"] = dict(sorted(w.ports.items()))
        if w.service_account:
            ep["serviceAccount"] = w.service_account
        endpoints.append(ep)
    value = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {
            "name": f"{NAME_PREFIX}{service}",
            "namespace": namespace,
            "labels": {SOURCE_LABEL: "registry"},
        },
        "spec": {
            "hosts": [service_host(workloads[0])],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [
                {"number": number, "name": name, "protocol": _protocol(name)}
                for name, number in sorted(ports.items(), key=lambda kv: (kv[1], kv[0]))
            ],
            "endpoints": endpoints,
        },
    }
    return ConfigEntry.from_value(value, revision)


def _protocol(port_name: str) -> str:
    # Istio's protocol selection by port name prefix (http, http2, grpc, tcp, ...).
    prefix = port_name.split("-", 1)[0].lower()
    return {
        "http": "HTTP",
        "http2": "HTTP2",
        "grpc": "GRPC",
        "tcp": "TCP",
        "https": "HTTPS",
        "tls": "TLS",
    }.get(prefix, "HTTP")
