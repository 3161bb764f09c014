"""Operations: admin endpoint, config reload (valid swap, invalid refused), SIGTERM drain of a real process."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

import pytest

from meshbus.bus.config.resources import DestinationRule, ServiceEntry, VirtualService
from meshbus.proxy.bootstrap import load_isolated
from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import Client, fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def route_to(subset: str) -> str:
    return yaml(f"""
        apiVersion: networking.istio.io/v1
        kind: DestinationRule
        metadata: {{name: reviews}}
        spec:
          host: reviews
          subsets:
          - {{name: v1, labels: {{version: v1}}}}
          - {{name: v2, labels: {{version: v2}}}}
        ---
        apiVersion: networking.istio.io/v1
        kind: VirtualService
        metadata: {{name: reviews}}
        spec:
          hosts: [reviews]
          http:
          - route: [{{destination: {{host: reviews, subset: {subset}}}}}]
        """)


async def test_admin_endpoints(upstreams: UpstreamFactory, proxy: ProxyFactory) -> None:
    u = await upstreams()
    p = await proxy(service_entry("reviews", [u]))
    assert (await fetch(p.port, "/")).status == 200
    a = p.admin_port
    ready = await fetch(a, "/ready", host="admin")
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    dump = (await fetch(a, "/config_dump", host="admin")).json()
    assert dump["version"] == p.server.runtime.version
    info = (await fetch(a, "/server_info", host="admin")).json()
    assert info["state"] == "LIVE" and info["config_version"] == dump["version"]
    text = (await fetch(a, "/clusters", host="admin")).body.decode()
    assert (
        f"outbound|9080||reviews.default.svc.cluster.local::127.0.0.1:{u.port}::health_flags::healthy" in text
    )
    stats = (await fetch(a, "/stats", host="admin")).body.decode()
    assert "istio_requests_total" in stats
    as_json = (await fetch(a, "/stats?format=json", host="admin")).json()
    assert any(s.get("name", "").startswith("istio_requests_total{") for s in as_json["stats"])
    prom = await fetch(a, "/stats/prometheus", host="admin")
    assert prom.headers["content-type"].startswith("text/plain; version=0.0.4")
    # mutations are POST only
    assert (await fetch(a, "/healthcheck/fail", host="admin")).status == 400
    assert (await fetch(a, "/healthcheck/fail", host="admin", method="POST")).status == 200
    assert (await fetch(a, "/ready", host="admin")).status == 503
    assert (await fetch(a, "/healthcheck/ok", host="admin", method="POST")).status == 200
    assert (await fetch(a, "/ready", host="admin")).status == 200
    assert (await fetch(a, "/nope", host="admin")).status == 404


async def test_reload_swaps_valid_config_and_in_flight_requests_finish(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    se = service_entry("reviews", [v1, v2])
    p = await proxy(se + route_to("v1"))
    old_version = p.server.runtime.version
    slow = asyncio.create_task(fetch(p.port, "/slow", headers=[("x-test-delay", "0.5")]))
    await v1.wait_for_requests(1)
    p.write_config(se + route_to("v2"))
    async with asyncio.timeout(5):
        while p.server.runtime.version == old_version:  # noqa: ASYNC110 - polling is fine here
            await asyncio.sleep(0.05)
    r = await fetch(p.port, "/new")
    assert r.json()["version"] == "v2"
    r = await slow
    assert r.status == 200 and r.json()["version"] == "v1"  # finished on the config it started with


async def test_invalid_config_is_refused_and_the_old_one_keeps_serving(
    upstreams: UpstreamFactory, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    u = await upstreams("v1")
    se = service_entry("reviews", [u])
    p = await proxy(se + route_to("v1"))
    version = p.server.runtime.version
    bad = se + route_to("v1").replace("subset: v1}}]", "subset: v1}, weight: -5}]")
    with caplog.at_level(logging.ERROR, logger="meshbus.proxy.adapters.server"):
        p.write_config(bad)
        async with asyncio.timeout(5):
            while p.server.reloads["refused"] == 0:  # noqa: ASYNC110 - polling is fine here
                await asyncio.sleep(0.05)
    assert p.server.runtime.version == version
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "config refused" in message and str(p.path) in message and "weight" in message
    assert (await fetch(p.port, "/")).json()["version"] == "v1"
    info = (await fetch(p.admin_port, "/server_info", host="admin")).json()
    assert "weight" in info["last_config_error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(40)
async def test_real_process_drains_on_sigterm(upstreams: UpstreamFactory, tmp_path: Path) -> None:
    u = await upstreams("v1")
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(service_entry("reviews", [u]))
    out_port, admin_port = _free_port(), _free_port()
    exe = shutil.which("meshbus-proxy", path=os.path.dirname(sys.executable))
    assert exe, "console script meshbus-proxy not installed (pip install -e .)"
    proc = await asyncio.create_subprocess_exec(
        exe, "--config", str(cfg), "--outbound", f"127.0.0.1:{out_port}", "--inbound", "off",
        "--admin", f"127.0.0.1:{admin_port}", "--workers", "1", "--drain-timeout", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    if (await fetch(admin_port, "/ready", host="admin")).status == 200:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
        c = await Client.connect(out_port)
        assert (await c.request(path="/warm")).status == 200
        slow = asyncio.create_task(c.request(path="/slow", headers=[("x-test-delay", "0.8")]))
        await u.wait_for_requests(2)
        proc.send_signal(signal.SIGTERM)
        r = await slow
        assert r.status == 200 and r.headers.get("connection") == "close"
        await c.close()
        code = await asyncio.wait_for(proc.wait(), 10)
        assert code == 0
        with pytest.raises(OSError):
            await fetch(out_port, "/after")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        _, err = await proc.communicate()
    assert b"stopped" in err


async def test_isolated_loader_applies_and_refuses_like_in_process(
    upstreams: UpstreamFactory, proxy: ProxyFactory
) -> None:
    """The CLI's default: YAML is validated in a child interpreter; workers get the validated models,
    and keep none of them once built (a reload parses afresh: the build memo could not reuse them)."""
    v1, v2 = await upstreams("v1"), await upstreams("v2")
    se = service_entry("reviews", [v1, v2])
    p = await proxy(se + route_to("v2"), isolate_loader=True)
    assert (await fetch(p.port, "/")).json()["version"] == "v2"
    resources, _ = await load_isolated(str(p.path))  # what load() got
    assert resources and all(
        isinstance(r, (ServiceEntry, VirtualService, DestinationRule)) for r in resources
    )
    assert resources[0].source.file == str(p.path)  # where each came from travels with it
    memo = p.server.runtime.memo
    assert memo is not None and memo.resources == () and not memo.services and not memo.hosts
    p.write_config(se + route_to("v2").replace("subset: v2}}]", "subset: v2}, weight: -5}]"))
    assert not await p.server.reload()
    assert str(p.path) in p.server.last_error and "weight" in p.server.last_error
    p.write_config(se + route_to("v1"))
    assert await p.server.reload()
    assert (await fetch(p.port, "/")).json()["version"] == "v1"
    memo = p.server.runtime.memo
    assert memo is not None and memo.resources == () and not memo.clusters


@pytest.mark.timeout(40)
async def test_workers_share_the_port_and_all_stop_on_sigterm(
    upstreams: UpstreamFactory, tmp_path: Path
) -> None:
    u = await upstreams("v1")
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text(service_entry("reviews", [u]))
    out_port, admin_port = _free_port(), _free_port()
    exe = shutil.which("meshbus-proxy", path=os.path.dirname(sys.executable))
    assert exe
    proc = await asyncio.create_subprocess_exec(
        exe, "--config", str(cfg), "--outbound", f"127.0.0.1:{out_port}", "--inbound", "off",
        "--admin", f"127.0.0.1:{admin_port}", "--workers", "2",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    if (await fetch(out_port, "/")).status == 200:
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.1)
        codes = [(await fetch(out_port, f"/{i}")).status for i in range(20)]
        assert codes == [200] * 20
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        _, err = await proc.communicate()
    assert err.count(b"stopped") == 2  # both workers drained and stopped
