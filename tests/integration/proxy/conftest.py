"""Fixtures: real upstream servers and an in-process proxy on ephemeral ports, configured by YAML."""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from meshbus.proxy.adapters.server import ProxyServer
from meshbus.proxy.bootstrap import Address, BootstrapConfig
from meshbus.telemetry.accesslog import AccessLogRecord
from tests.integration.proxy.upstreams import Upstream

LOCAL = Address("127.0.0.1", 0)


def service_entry(name: str, upstreams: list[Upstream], port: int = 9080, namespace: str = "default") -> str:
    eps = "".join(
        f"""
  - address: 127.0.0.1
    ports: {{http: {u.port}}}
    labels: {{version: {u.version}}}"""
        for u in upstreams
    )
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}.{namespace}.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: {port}, name: http, protocol: HTTP}}
  endpoints:{eps}
---
"""


def yaml(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


class LogCapture:
    """An access-log sink that keeps the records (set as ``server.access_log``)."""

    def __init__(self) -> None:
        self.records: list[AccessLogRecord] = []

    def log(self, record: AccessLogRecord) -> None:
        self.records.append(record)


UpstreamFactory = Callable[..., Awaitable[Upstream]]


@pytest.fixture
async def upstreams() -> AsyncIterator[UpstreamFactory]:
    made: list[Upstream] = []

    async def make(version: str = "v1", **kw: Any) -> Upstream:
        u = await Upstream(version=version, **kw).start()
        made.append(u)
        return u

    yield make
    for u in made:
        await u.stop()


class ProxyHandle:
    def __init__(self, server: ProxyServer, path: Path) -> None:
        self.server = server
        self.path = path

    @property
    def port(self) -> int:
        return self.server.ports["outbound"]

    @property
    def inbound_port(self) -> int:
        return self.server.ports["inbound"]

    @property
    def admin_port(self) -> int:
        return self.server.ports["admin"]

    def write_config(self, text: str) -> None:
        self.path.write_text(text)


ProxyFactory = Callable[..., Awaitable[ProxyHandle]]


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[ProxyFactory]:
    started: list[ProxyServer] = []

    async def start(config_text: str, **overrides: Any) -> ProxyHandle:
        path = tmp_path / f"mesh{len(started)}.yaml"
        path.write_text(config_text)
        cfg = BootstrapConfig(
            config_path=str(path), outbound=LOCAL, inbound=LOCAL, admin=LOCAL, reload_interval=0.1
        )
        cfg = dataclasses.replace(cfg, **overrides)
        server = ProxyServer(cfg)
        await server.start()
        started.append(server)
        return ProxyHandle(server, path)

    yield start
    for s in started:
        await s.shutdown(0)
