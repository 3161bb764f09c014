"""The example remote filter in JavaScript (examples/js-stamp-filter, nats.js) passes the same test as its
Python twin (examples/meshbus-stamp behind FilterHost): same responses through a proxy, same
pluginConfig check from its published schema, listed as a live host."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from meshbus.bus.config.loader import load_text
from meshbus.bus.connection import BusConnection
from meshbus.control.config.filters import check_plugins, list_hosts, remote_filters
from meshbus.plugins.registry import info_of
from meshbus.plugins.remote.host import FilterHost
from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry, yaml
from tests.integration.proxy.upstreams import fetch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
JS = EXAMPLES / "js-stamp-filter"
HOST = "reviews.default.svc.cluster.local:9080"


def python_stamp() -> type:
    spec = importlib.util.spec_from_file_location(
        "meshbus_stamp", EXAMPLES / "meshbus-stamp" / "meshbus_stamp.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Stamp  # type: ignore[no-any-return]


def node_ready() -> str | None:
    """Why the JavaScript twin cannot run here, or None (node_modules installed from npm if need be)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return "node is not installed"
    if not (JS / "node_modules" / "nats").is_dir():
        if npm is None:
            return "npm is not installed (needed once for nats.js)"
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            return f"npm ci failed (the npm registry is needed once for nats.js): {done.stderr[-500:]}"
    return None


@pytest.fixture(params=["python", "javascript"])
async def stamp_host(request: pytest.FixtureRequest, bus: BusConnection) -> AsyncIterator[str]:
    if request.param == "python":
        async with FilterHost(bus, info_of("stamp", python_stamp(), "meshbus-stamp")):
            yield "python"
        return
    why = await asyncio.to_thread(node_ready)
    if why is not None:
        pytest.skip(why)
    proc = await asyncio.create_subprocess_exec(
        "node", str(JS / "stamp.js"), "--nats", bus.settings.url, "--subject-root", bus.subjects.root,
        cwd=JS, env={**os.environ}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)  # it prints once it serves
        assert b"serving filter stamp" in line, line
        yield "javascript"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


def plugin(config: str = "{value: hello}") -> str:
    return yaml(f"""
        apiVersion: meshbus.io/v1
        kind: Plugin
        metadata: {{name: stamp, namespace: default}}
        spec:
          filter: stamp
          placement: REMOTE
          match: [{{mode: CLIENT}}]
          pluginConfig: {config}
    """)


async def test_the_stamp_filter_behind_its_host(
    stamp_host: str, bus: BusConnection, proxy: ProxyFactory, upstreams: UpstreamFactory
) -> None:
    up = await upstreams()
    p = await proxy(
        service_entry("reviews", [up]) + "---\n" + plugin(),
        nats=bus.settings.url,
        subject_root=bus.subjects.root,
    )
    r = await fetch(p.port, "/a", host=HOST)
    assert (r.status, r.headers.get("x-stamp"), r.json()["headers"].get("x-stamped")) == (
        200,
        "hello",
        "hello",
    )
    r = await fetch(p.port, "/a", host=HOST, headers=[("x-block", "1")])
    assert (r.status, r.body) == (451, b"blocked\n")

    # its published schema checks a pluginConfig as the Python Config does
    bad = load_text(plugin("{value: [1], extra: 2}"), "stamp.yaml").resources
    problems = await check_plugins(bus, bad)
    assert sorted(e.path for e in problems.errors) == ["spec.pluginConfig.extra", "spec.pluginConfig.value"]
    assert "stamp" in await remote_filters(bus, ["stamp"])
    (listed,) = await list_hosts(bus, timeout=0.3)
    assert (
        listed["metadata"]["filter"] == "stamp"
        and listed["metadata"]["hooks"] == "request_headers,response_headers"
    )

    # what an operator sees: meshctl plugins lists it among the live hosts, with its language
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "meshbus.control.cli", "plugins", "-o", "json", "--timeout", "0.5",
        "--nats", bus.settings.url, "--subject-root", bus.subjects.root, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    doc = json.loads(out)
    (host,) = doc["remote"]
    assert (host["name"], host["language"], host["hooks"]) == (
        "stamp",
        stamp_host,
        ["request_headers", "response_headers"],
    )
    assert "json-schema" in {f["name"] for f in doc["installed"]}
