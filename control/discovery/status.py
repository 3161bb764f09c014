"""Merge the replicas' proxy-status rows into one view per proxy (sans-IO; used by meshctl).

Every replica knows every proxy (registry and ACKs are heard by all), but only the replica that
pushes to a proxy knows what it sent. Per node: the send with the highest version wins, the
highest version the proxy reported running wins, and a NACK stands unless a newer ACK follows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from meshbus.bus.schemas.discovery import ProxyStatus, ProxyStatusReply

from .acks import NACK, STALE, AckLedger, derive_status
from .registry import Registry


@dataclass(frozen=True, slots=True)
class ProxyView:
    row: ProxyStatus
    status: str

    @property
    def status_text(self) -> str:
        """``SYNCED``, ``STALE (sent v12)``, ``NACK: <error>``, ``NOT SENT``."""
        if self.status == NACK:
            return f"NACK (v{self.row.nack_version}): {self.row.nack_error}"
        if self.status == STALE:
            return f"STALE (sent v{self.row.sent_version})"
        return self.status


def merge(replies: Iterable[ProxyStatusReply]) -> list[ProxyView]:
    best: dict[str, ProxyStatus] = {}
    for reply in replies:
        for row in reply.proxies:
            cur = best.get(row.node)
            best[row.node] = row if cur is None else _combine(cur, row)
    return [
        ProxyView(r, derive_status(r.sent_version, r.acked_version, r.nack_version))
        for r in sorted(best.values(), key=lambda r: (r.namespace, r.node))
    ]


def _combine(a: ProxyStatus, b: ProxyStatus) -> ProxyStatus:
    sent = a if a.sent_version >= b.sent_version else b
    nack = a if a.nack_version >= b.nack_version else b
    newer = a if a.last_seen >= b.last_seen else b
    return ProxyStatus(
        node=newer.node,
        service=newer.service,
        namespace=newer.namespace,
        labels=newer.labels,
        address=newer.address,
        proxy_version=newer.proxy_version,
        sent_version=sent.sent_version,
        sent_at=sent.sent_at,
        acked_version=max(a.acked_version, b.acked_version),
        nack_version=nack.nack_version,
        nack_error=nack.nack_error,
        registered_at=min(x.registered_at for x in (a, b) if x.registered_at)
        if a.registered_at or b.registered_at
        else 0.0,
        last_seen=newer.last_seen,
        app_health=newer.app_health,
        app_health_detail=newer.app_health_detail,
    )


def status_rows(registry: Registry, ledger: AckLedger) -> list[ProxyStatus]:
    """This replica's row for every registered proxy."""
    rows = []
    for node, e in sorted(registry.entries.items()):
        w = e.workload
        led = ledger.nodes.get(node)
        rows.append(
            ProxyStatus(
                node=node,
                service=w.service,
                namespace=w.namespace,
                labels=dict(w.labels),
                address=w.address,
                proxy_version=w.proxy_version,
                sent_version=led.sent_version if led else 0,
                sent_at=led.sent_at if led else 0.0,
                acked_version=max(led.acked_version if led else 0, e.applied_version),
                nack_version=led.nack_version if led else 0,
                nack_error=led.nack_error if led else "",
                registered_at=e.registered_at,
                last_seen=e.last_seen_wall,
                app_health=e.app_health,
                app_health_detail=e.app_health_detail,
            )
        )
    return rows
