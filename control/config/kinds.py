"""Kind names as operators type them: kubectl-style short names, plurals and ``kind.group``.

``vs``, ``virtualservice``, ``VirtualServices`` and ``virtualservice.networking.istio.io`` all
resolve to ``VirtualService`` (case-insensitive), as ``kubectl get`` resolves Istio's CRD short
names. Sans-IO: used by meshctl and by the service alike.
"""

from __future__ import annotations

from meshbus.bus.config.resources import KINDS

# Istio's CRD shortNames (manifests/charts/base/files/crd-all.gen.yaml), plus meshbus's own kinds.
SHORT_NAMES: dict[str, str] = {
    "vs": "VirtualService",
    "dr": "DestinationRule",
    "gw": "Gateway",
    "se": "ServiceEntry",
    "we": "WorkloadEntry",
    "pa": "PeerAuthentication",
    "ra": "RequestAuthentication",
    "ap": "AuthorizationPolicy",
    "lrl": "LocalRateLimit",
    "rl": "RateLimit",
    "wg": "WorkloadGroup",
    "gtw": "KubernetesGateway",
}


def _plural(kind: str) -> str:
    lower = kind.lower()
    return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"


def _aliases() -> dict[str, str]:
    table: dict[str, str] = {}
    for key_kind, rtype in KINDS.items():
        for name in (key_kind.lower(), _plural(key_kind)):
            table[name] = key_kind
        # kubectl's ``kind.group`` form uses the kind as written: gateway.gateway.networking.k8s.io
        for name in (rtype.KIND.lower(), _plural(rtype.KIND)):
            table[f"{name}.{rtype.GROUP}"] = key_kind
    table.update(SHORT_NAMES)
    return table


_ALIASES = _aliases()


class UnknownKindError(ValueError):
    """The text names no supported kind."""


def resolve_kind(text: str) -> str:
    """Operator spelling -> canonical kind (``vs`` -> ``VirtualService``); UnknownKindError if none."""
    kind = _ALIASES.get(text.strip().lower())
    if kind is None:
        known = ", ".join(sorted(KINDS))
        raise UnknownKindError(f'meshbus: unknown resource type "{text}" (supported: {known})')
    return kind


def group_of(kind: str) -> str:
    rtype = KINDS.get(kind)
    return rtype.GROUP if rtype is not None else ""


def kubectl_name(kind: str, name: str) -> str:
    """``virtualservice.networking.istio.io/reviews``, as kubectl prints a resource it changed."""
    rtype = KINDS.get(kind)
    if rtype is None:
        return f"{kind.lower()}/{name}"
    return f"{rtype.KIND.lower()}.{rtype.GROUP}/{name}"
