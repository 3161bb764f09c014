"""Client side of discovery's queries (asyncio): proxy-status, proxy-config, registry hosts.

proxy-status is a scatter/gather: the request goes to every replica (no queue group) and replies
are collected until as many arrived as the replicas say are alive, or the timeout passes.
proxy-config asks the proxy itself, which answers with the snapshot it runs.
registry hosts asks any one replica (each holds the whole registry) which services have workloads.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.aio.msg import Msg

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError, UnavailableError
from meshbus.bus.rpc import request
from meshbus.bus.schemas.discovery import (
    ProxyConfigReply,
    ProxyConfigRequest,
    ProxyStatusReply,
    ProxyStatusRequest,
    RegistryHostsReply,
    RegistryHostsRequest,
)

from .status import ProxyView, merge


async def gather_status(bus: BusConnection, *, timeout: float = 1.0) -> list[ProxyStatusReply]:
    replies: list[ProxyStatusReply] = []
    enough = asyncio.Event()

    async def on_reply(msg: Msg) -> None:
        try:
            reply = codec.decode(msg.data, msg.headers, ProxyStatusReply, max_bytes=bus.settings.max_payload)
        except BusError:
            return
        replies.append(reply)
        if len({r.replica for r in replies}) >= max(r.live_replicas for r in replies):
            enough.set()

    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox, cb=on_reply)
    try:
        data, headers = codec.encode(ProxyStatusRequest())
        await bus.nc.publish(bus.subjects.xds_status(), data, reply=inbox, headers=headers)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout)
    finally:
        await sub.unsubscribe()
    if not replies:
        raise UnavailableError("no discovery replica answered (is meshbus-discovery running?)")
    return replies


async def proxy_status(bus: BusConnection, *, timeout: float = 1.0) -> list[ProxyView]:
    return merge(await gather_status(bus, timeout=timeout))


async def proxy_config(bus: BusConnection, node: str, *, timeout: float = 2.0) -> ProxyConfigReply:
    try:
        return await request(
            bus, bus.subjects.xds_config_dump(node), ProxyConfigRequest(), ProxyConfigReply, timeout=timeout
        )
    except UnavailableError:
        raise UnavailableError(f"proxy {node!r} did not answer (unknown id, or not in mesh mode)") from None


async def registry_hosts(bus: BusConnection, *, timeout: float = 0.5) -> frozenset[str] | None:
    """FQDNs of the services with a registered workload; None when no ready replica answers in time
    (then nobody can say which hosts exist: callers keep their registry-less policy)."""
    try:
        reply = await request(
            bus, bus.subjects.xds_hosts(), RegistryHostsRequest(), RegistryHostsReply, timeout=timeout
        )
    except BusError:
        return None
    return frozenset(reply.hosts)
