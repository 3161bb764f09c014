"""Small builders for discovery unit tests: resource dicts as the config KV stores them."""

from __future__ import annotations

from typing import Any

from meshbus.bus.schemas.discovery import Register
from meshbus.control.discovery.model import ConfigEntry, MeshModel


def manifest(kind: str, name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    group = "security.istio.io" if kind.endswith(("Policy", "Authentication")) else "networking.istio.io"
    return {
        "apiVersion": f"{group}/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def vs(name: str, host: str, *routes: tuple[str, int], namespace: str = "default") -> dict[str, Any]:
    dests = [{"destination": {"host": host, "subset": s}, "weight": w} for s, w in routes] or [
        {"destination": {"host": host}}
    ]
    return manifest("VirtualService", name, {"hosts": [host], "http": [{"route": dests}]}, namespace)


def dr(name: str, host: str, *subsets: str, namespace: str = "default") -> dict[str, Any]:
    spec = {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]}
    return manifest("DestinationRule", name, spec, namespace)


def sidecar(
    name: str, hosts: list[str], labels: dict[str, str] | None = None, namespace: str = "default"
) -> dict[str, Any]:
    spec: dict[str, Any] = {"egress": [{"hosts": hosts}]}
    if labels:
        spec["workloadSelector"] = {"labels": labels}
    return manifest("Sidecar", name, spec, namespace)


def model_of(*values: dict[str, Any], start_revision: int = 1) -> MeshModel:
    return MeshModel().apply([ConfigEntry.from_value(v, start_revision + i) for i, v in enumerate(values)])


def workload(
    node: str, service: str, version: str = "v1", namespace: str = "default", address: str = "10.0.0.1"
) -> Register:
    return Register(
        node_id=node,
        service=service,
        namespace=namespace,
        labels={"app": service, "version": version},
        address=address,
        ports={"http": 9080},
        inbound_port=15006,
    )
