"""Who is on each end of a request: the workload descriptions both Istio reporters label metrics with.

How each side learns the other (issue 13 asks which mechanism, and why):

- The client sidecar (``reporter="source"``) knows the destination from the registry: the endpoint
  it picked is a registered workload, whose labels (app, version) and service account discovery put
  in the proxy's snapshot (control/discovery/endpoints.py), and whose identity the mTLS handshake
  verified. No header and no lookup per request: the labels are built once per endpoint.
- The server sidecar (``reporter="destination"``) cannot know the caller's workload that way: its
  snapshot holds the services it calls, not its callers, and a SPIFFE ID names a service account,
  which several workloads share (reviews v1 and v2 both run as ``reviews``). So the client sidecar
  sends its own description in one request header, ``x-meshbus-peer`` (Istio's telemetry v2 does
  the same with ``x-envoy-peer-metadata``), which the server sidecar reads and removes before the
  app sees it. With mTLS the header is believed only when its namespace and service account are
  those of the verified peer certificate; otherwise the caller is labelled by its certificate alone
  (a workload cannot claim to be another). Without mTLS it is taken as sent, as Istio does.

The header value is ``1;<workload>;<namespace>;<app>;<version>;<canonical service>;<canonical
revision>;<cluster>;<service account>``: built once per proxy, parsed once per distinct value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from meshbus.telemetry.fields import UNKNOWN

PEER_HEADER: Final = "x-meshbus-peer"
CLUSTER_ID: Final = "meshbus"
"""meshbus runs one cluster; Istio's default cluster id is "Kubernetes"."""
_VERSION: Final = "1"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._/:@-]")
_FIELDS: Final = 8


def _clean(value: str) -> str:
    return _UNSAFE.sub("_", value) if value else UNKNOWN


def workload_name(service: str, labels: Mapping[str, str]) -> str:
    """Istio names a workload after its Deployment; a meshbus workload is ``<service>-<version>``
    (``reviews-v1``), or the label ``meshbus.io/workload`` when set."""
    explicit = labels.get("meshbus.io/workload")
    if explicit:
        return explicit
    base = service or labels.get("app", "")
    version = labels.get("version", "")
    return "-".join(p for p in (base, version) if p) or UNKNOWN


@dataclass(frozen=True, slots=True)
class Workload:
    """One end of a request, as Istio's ``source_*`` / ``destination_*`` labels describe it."""

    name: str = UNKNOWN
    namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN
    cluster: str = UNKNOWN
    service_account: str = ""

    @classmethod
    def of(
        cls, service: str, namespace: str, labels: Mapping[str, str], service_account: str = ""
    ) -> Workload:
        """Istio's rules for the app, version and canonical labels (istio/pkg/model labels)."""
        name = workload_name(service, labels)
        app = labels.get("app") or labels.get("app.kubernetes.io/name") or UNKNOWN
        version = labels.get("version") or labels.get("app.kubernetes.io/version") or UNKNOWN
        canonical = (
            labels.get("service.istio.io/canonical-name")
            or labels.get("app.kubernetes.io/name")
            or labels.get("app")
            or name
        )
        revision = (
            labels.get("service.istio.io/canonical-revision")
            or labels.get("app.kubernetes.io/version")
            or labels.get("version")
            or "latest"
        )
        return cls(
            _clean(name),
            _clean(namespace),
            _clean(app),
            _clean(version),
            _clean(canonical),
            _clean(revision),
            CLUSTER_ID,
            _clean(service_account) if service_account else "",
        )

    def header_value(self) -> str:
        return ";".join(
            (
                _VERSION,
                self.name,
                self.namespace,
                self.app,
                self.version,
                self.canonical_service,
                self.canonical_revision,
                self.cluster,
                self.service_account,
            )
        )

    @classmethod
    def from_header(cls, value: str) -> Workload | None:
        """The workload a peer header describes; None when it is not one (another version, garbage)."""
        parts = value.split(";")
        if len(parts) != _FIELDS + 1 or parts[0] != _VERSION:
            return None
        if any(_UNSAFE.search(p) for p in parts[1:]):
            return None
        return cls(*parts[1:])

    def principal(self, trust_domain: str) -> str:
        """The SPIFFE ID this workload's certificate names (``unknown`` without a service account)."""
        if not self.service_account or self.namespace == UNKNOWN:
            return UNKNOWN
        return f"spiffe://{trust_domain}/ns/{self.namespace}/sa/{self.service_account}"


UNKNOWN_WORKLOAD: Final = Workload()


def spiffe_parts(principal: str) -> tuple[str, str, str] | None:
    """(trust domain, namespace, service account) of ``spiffe://td/ns/N/sa/S``, else None."""
    if not principal.startswith("spiffe://"):
        return None
    td, _, path = principal[9:].partition("/")
    parts = path.split("/")
    if len(parts) != 4 or parts[0] != "ns" or parts[2] != "sa":
        return None
    return td, parts[1], parts[3]


def believed(claimed: Workload | None, principal: str | None) -> Workload:
    """The caller the server side reports: the claimed workload when nothing contradicts it, else
    what the verified certificate says (namespace and service account only)."""
    if principal is None:
        return claimed if claimed is not None else UNKNOWN_WORKLOAD
    parts = spiffe_parts(principal)
    if parts is None:
        return UNKNOWN_WORKLOAD
    _td, ns, sa = parts
    if claimed is not None and claimed.namespace == ns and claimed.service_account == sa:
        return claimed
    return Workload(namespace=ns, service_account=sa)
