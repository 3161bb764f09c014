"""VirtualService match blocks scoped by sourceLabels / sourceNamespace, end to end: the proxy's own
workload labels (--labels) decide which blocks exist on it, as Istio decides per sidecar."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.proxy.conftest import ProxyFactory, yaml

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

CONFIG = yaml("""
    apiVersion: networking.istio.io/v1
    kind: ServiceEntry
    metadata: {name: ratings}
    spec:
      hosts: [ratings]
      resolution: STATIC
      ports: [{number: 9080, name: http, protocol: HTTP}]
      endpoints: [{address: 127.0.0.1, ports: {http: 9}}]
    ---
    apiVersion: networking.istio.io/v1
    kind: VirtualService
    metadata: {name: ratings}
    spec:
      hosts: [ratings]
      http:
      - match: [{sourceLabels: {app: reviews, version: v2}}]
        directResponse: {status: 200, body: {string: "for reviews v2"}}
      - directResponse: {status: 200, body: {string: "for everyone else"}}
    """)


async def body_of(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: ratings\r\nConnection: close\r\n\r\n")
    data = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    "labels,want",
    [
        ({"app": "reviews", "version": "v2"}, b"for reviews v2"),
        ({"app": "reviews", "version": "v1"}, b"for everyone else"),
        ({}, b"for everyone else"),
    ],
)
async def test_the_proxys_workload_labels_pick_the_match_blocks(
    proxy: ProxyFactory, labels: dict[str, str], want: bytes
) -> None:
    p = await proxy(CONFIG, labels=labels)
    assert await body_of(p.port) == want
