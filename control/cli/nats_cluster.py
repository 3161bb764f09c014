"""``meshctl up --nats-cluster N``: N nats-server nodes on loopback, one JetStream cluster.

Each node gets a config file of its own in ``<data-dir>/nats/cluster/`` (0600): its ``server_name``,
the cluster block (``name``, ``listen`` on 127.0.0.1, ``routes`` to every other node) and, on a
secured bus, route credentials (a password generated per run: anyone who can reach a cluster port
could otherwise join as a route and read every subject) plus an ``include`` of the secured bus's
config (`meshbus.control.cli.bus_auth`: users, permissions, TLS). Stores are ``<data-dir>/nats/nK``.
Client ports are ``--nats-port`` + 0, 1, ... (free ones with 0); cluster ports are free ones.

Every process then gets all client URLs (``MESHBUS_NATS_URL=nats://a,nats://b,...``; nats-py tries
them in turn and learns the others from the servers) and ``MESHBUS_KV_REPLICAS`` (min(N, 3)): the
config KV, tokens and the other buckets are kept on three nodes, so one may die.
JetStream needs a quorum (2 of 3) to elect its meta leader before any bucket can be made: `wait_for_jetstream`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.errors import UnavailableError
from meshbus.bus.kv import ENV_REPLICAS
from meshbus.bus.subjects import inbox_prefix
from meshbus.control.ca.material import write_atomic

from .bus_auth import BUS_DIR, CONF_FILE

CLUSTER_NAME = "meshbus"
ROUTE_USER = "route"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    client_port: int
    cluster_port: int
    conf: Path
    store: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def plan(data_dir: Path, size: int, *, client_port: int, secured: bool) -> list[Node]:
    """Write each node's config and return the nodes (not started)."""
    if size < 1:
        raise ValueError("meshbus: --nats-cluster needs at least 1 node")
    conf_dir = data_dir / "nats" / "cluster"
    conf_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(24)
    nodes = [
        Node(
            f"n{i + 1}",
            client_port + i if client_port else 0,
            _free_port(),
            conf_dir / f"n{i + 1}.conf",
            data_dir / "nats" / f"n{i + 1}",
        )
        for i in range(size)
    ]
    creds = f"{ROUTE_USER}:{password}@" if secured else ""
    for node in nodes:
        cluster: dict[str, object] = {
            "name": CLUSTER_NAME,
            "listen": f"127.0.0.1:{node.cluster_port}",
            "routes": [f"nats-route://{creds}127.0.0.1:{o.cluster_port}" for o in nodes if o is not node],
        }
        if secured:
            cluster["authorization"] = {"user": ROUTE_USER, "password": password}
        text = f"# Written by meshctl up --nats-cluster {size}: edits are lost.\n"
        text += f"server_name: {json.dumps(node.name)}\ncluster: {json.dumps(cluster, indent=2)}\n"
        if secured:  # users, permissions and TLS: the same for every node (relative to this file)
            text += f'include "../../{BUS_DIR}/{CONF_FILE}"\n'
        write_atomic(node.conf, text.encode(), 0o600)
    return nodes


def server(spec: Node, log_dir: Path) -> EmbeddedNats:
    return EmbeddedNats(
        port=spec.client_port,
        store_dir=str(spec.store),
        log_path=str(log_dir / f"nats-{spec.name}.log"),
        extra_args=("-c", str(spec.conf)),
    )


def child_env(urls: list[str], size: int) -> dict[str, str]:
    return {"MESHBUS_NATS_URL": ",".join(urls), ENV_REPLICAS: str(min(size, 3))}


def probe_settings(url: str) -> BusSettings:
    """The connection `wait_for_jetstream` asks with (on a secured bus, as the config role: it may ask
    JetStream; the operator may not; `meshbus.control.cli.bus_auth.client_settings` adds its certificate)."""
    return BusSettings(
        url=url, name="meshctl up", reconnect_max=0.2, inbox_prefix=inbox_prefix("role", "config")
    )


async def wait_for_jetstream(settings: BusSettings, deadline: float) -> None:
    """Until the cluster's JetStream answers (its meta leader is elected), or UnavailableError."""
    bus = BusConnection(settings)
    try:
        await asyncio.wait_for(bus.connect(wait=True), max(0.1, deadline - time.monotonic()))
        js = bus.nc.jetstream(timeout=1.0)
        while True:
            try:
                await js.account_info()
                return
            except Exception as exc:  # no meta leader yet: "JetStream system temporarily unavailable"
                if time.monotonic() > deadline:
                    raise UnavailableError(
                        f"JetStream of the NATS cluster did not become ready: {exc}"
                    ) from None
                await asyncio.sleep(0.1)  # nothing to await: the election sends clients no event
    except TimeoutError:
        raise UnavailableError(f"the NATS cluster at {settings.url} did not answer") from None
    finally:
        await bus.close(drain=False)
