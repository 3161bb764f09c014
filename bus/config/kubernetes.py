"""Kubernetes documents that share a file with mesh config (Service, Deployment, Pod, Secret, ...).

Istio users keep them together; meshbus does not apply them, but the loader keeps what the
analyzers can use: Services are hosts with ports (as istiod sees them), and the pod labels of Pods and
workload templates tell whether a DestinationRule subset selects anything.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from meshbus.bus.config.source import Source

WORKLOAD_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


@dataclass(frozen=True, slots=True)
class KubernetesObject:
    """A document of a kind meshbus does not read, as written (``data``) and where (``source``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    data: Mapping[str, Any]
    source: Source

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"

    @classmethod
    def of(cls, data: Mapping[str, Any], source: Source) -> KubernetesObject:
        meta = data.get("metadata")
        meta = meta if isinstance(meta, Mapping) else {}
        return cls(
            api_version=str(data.get("apiVersion") or ""),
            kind=str(data.get("kind") or ""),
            namespace=str(meta.get("namespace") or "default"),
            name=str(meta.get("name") or ""),
            data=data,
            source=source,
        )

    def _spec(self) -> Mapping[str, Any]:
        spec = self.data.get("spec")
        return spec if isinstance(spec, Mapping) else {}


def service_ports(objects: Iterable[KubernetesObject]) -> dict[str, set[int]]:
    """``name.namespace.svc.cluster.local`` -> declared port numbers, for every core Service."""
    out: dict[str, set[int]] = {}
    for obj in objects:
        if obj.kind != "Service" or obj.api_version != "v1" or not obj.name:
            continue
        ports = out.setdefault(f"{obj.name}.{obj.namespace}.svc.cluster.local", set())
        for port in obj._spec().get("ports") or ():
            if isinstance(port, Mapping) and isinstance(port.get("port"), int):
                ports.add(port["port"])
    return out


def service_selectors(objects: Iterable[KubernetesObject]) -> dict[str, dict[str, str]]:
    """``name.namespace.svc.cluster.local`` -> the Service's pod selector (Services that have one)."""
    out: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.kind == "Service" and obj.api_version == "v1" and obj.name:
            sel = obj._spec().get("selector")
            if isinstance(sel, Mapping) and sel:
                out[f"{obj.name}.{obj.namespace}.svc.cluster.local"] = {
                    str(k): str(v) for k, v in sel.items()
                }
    return out


def pod_labels(objects: Iterable[KubernetesObject]) -> dict[str, list[dict[str, str]]]:
    """namespace -> the label sets of every Pod and workload pod template in the file."""
    out: dict[str, list[dict[str, str]]] = {}
    for obj in objects:
        labels: Any = None
        if obj.kind == "Pod":
            meta = obj.data.get("metadata")
            labels = meta.get("labels") if isinstance(meta, Mapping) else None
        elif obj.kind in WORKLOAD_KINDS:
            template = obj._spec().get("template")
            meta = template.get("metadata") if isinstance(template, Mapping) else None
            labels = meta.get("labels") if isinstance(meta, Mapping) else None
        if isinstance(labels, Mapping):
            out.setdefault(obj.namespace, []).append({str(k): str(v) for k, v in labels.items()})
    return out


def workload_namespace(objects: Iterable[KubernetesObject], selector: Mapping[str, str]) -> str | None:
    """The namespace of the first Pod or workload template the selector matches (a gateway's workload)."""
    for namespace, label_sets in pod_labels(objects).items():
        if any(all(labels.get(k) == v for k, v in selector.items()) for labels in label_sets):
            return namespace
    return None


def secret_certificate(objects: Iterable[KubernetesObject], namespace: str, name: str) -> bytes | None:
    """The ``tls.crt`` (or ``cert``) of Secret namespace/name in the files, b"" if it has none; None if the
    files hold no such Secret."""
    for obj in objects:
        if obj.kind != "Secret" or obj.namespace != namespace or obj.name != name:
            continue
        plain = obj.data.get("stringData")
        if isinstance(plain, Mapping):
            for key in ("tls.crt", "cert"):
                if isinstance(plain.get(key), str):
                    return str(plain[key]).encode()
        data = obj.data.get("data")
        if isinstance(data, Mapping):
            for key in ("tls.crt", "cert"):
                if isinstance(data.get(key), str):
                    try:
                        return base64.b64decode(str(data[key]), validate=True)
                    except (binascii.Error, ValueError):
                        return b""
        return b""
    return None
