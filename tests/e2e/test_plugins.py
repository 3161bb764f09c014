"""Issue 12, done when: the example filter package, pip-installed, runs where a Plugin selects it, live;
deleting the Plugin takes the effect away; the same filter behind meshbus-filter-host (REMOTE) gives
the identical responses. Real processes: NATS, meshbus-config, discovery, sidecars, a filter host."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshbus.bus.errors import BadRequestError
from tests.support.mesh import DemoMesh, start_demo, vs_yaml
from tests.support.nats_server import require_binary
from tests.support.processes import PYTHON, ProcessGroup, Reply

pytestmark = pytest.mark.timeout(90)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "meshbus-stamp"


def install_example(target: Path) -> None:
    """pip install of the example package from its folder, into ``target`` (no index, no internet)."""
    subprocess.run(
        [PYTHON, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def stamp_mesh(tmp_path: Path, processes: ProcessGroup) -> Iterator[DemoMesh]:
    require_binary()
    site = tmp_path / "site"
    install_example(site)
    # every process of the mesh (meshbus-config checks pluginConfig with it; sidecars run it)
    processes.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), processes.env.get("PYTHONPATH")) if p
    )
    mesh = start_demo(tmp_path, processes, mtls=False)
    mesh.apply(vs_yaml({"v1": 100}))  # every request to the one workload the Plugins select
    try:
        yield mesh
    finally:
        processes.stop_all()
        mesh.nats.cleanup()


def plugin(placement: str, value: str = "hello") -> str:
    return f"""\
apiVersion: meshbus.io/v1
kind: Plugin
metadata: {{name: stamp, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews, version: v1}}}}
  filter: stamp
  placement: {placement}
  match: [{{mode: SERVER}}]
  pluginConfig: {{value: {value}}}
"""


def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)  # traffic is the only way to see a proxy's config take effect
    return time.monotonic() - start


def get(mesh: DemoMesh, **headers: str) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", mesh.ports.client_outbound, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": "reviews", **headers})
        with conn.getresponse() as r:
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def responses(mesh: DemoMesh) -> list[tuple[int, str | None, bytes]]:
    """What a client sees of a plain request and of one the filter blocks (no per-request ids)."""
    out = []
    for r in (get(mesh), get(mesh, **{"x-block": "1"})):
        out.append((r.status, r.headers.get("x-stamp"), r.body if r.status != 200 else b""))
    return out


def stamped(mesh: DemoMesh) -> bool:
    return get(mesh).headers.get("x-stamp") == "hello"


def test_example_plugin_applies_live_goes_on_delete_and_runs_the_same_remotely(
    stamp_mesh: DemoMesh, processes: ProcessGroup
) -> None:
    mesh = stamp_mesh
    assert "x-stamp" not in get(mesh).headers

    # a bad pluginConfig is refused when applied, naming the field (meshbus-config has the package)
    with pytest.raises(BadRequestError, match=r"Plugin default/stamp: spec\.pluginConfig\.value"):
        mesh.apply(plugin("IN_PROCESS").replace("{value: hello}", "{value: [1]}"), file="bad.yaml")

    mesh.apply(plugin("IN_PROCESS"))
    took = until("the Plugin stamps responses", lambda: stamped(mesh))
    print(f"Plugin applied: effect on traffic after {took * 1000:.0f} ms")
    in_process = responses(mesh)
    assert in_process == [(200, "hello", b""), (451, None, b"blocked\n")]

    mesh.delete("Plugin", "stamp")
    until("the effect goes with the Plugin", lambda: not stamped(mesh))
    assert responses(mesh)[1][0] == 200

    processes.spawn(
        "filter-host",
        [PYTHON, "-m", "meshbus.plugins.remote", "--filter", "stamp", "--concurrency", "4"],
    )
    mesh.apply(plugin("REMOTE"))  # before the host is up: a warning; the proxies ask it when it is
    until("the remote Plugin stamps responses", lambda: stamped(mesh))
    assert responses(mesh) == in_process
