"""The `meshctl up` demo mesh, started piece by piece for end-to-end tests.

The processes are exactly what `meshctl up` runs (`meshbus.control.cli.demo_plan.children`), on a
block of free ports, against a NATS server the test owns (so it can kill and restart it). The test
talks to the mesh as an operator does: config through meshbus-config, status through discovery,
traffic through the productpage sidecar's outbound listener.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.config import ApplyReply, DeleteReply, Document, ResourceRef
from meshbus.control.cli.demo_plan import DemoPorts, children
from meshbus.control.cli.up import mint_tokens
from meshbus.control.config.client import ConfigClient
from meshbus.control.discovery.client import proxy_status
from meshbus.control.discovery.status import ProxyView

from .processes import PYTHON, ProcessGroup, free_port_block, http_get, is_ready, wait_for

T = TypeVar("T")

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "fixtures" / "demo"
"""The tests' own copy of samples/demo (the README tells users to edit that one): 90/10 v1/v2."""

# Faster control-plane timers for tests. The warm-up must stay above the agents' 1 s heartbeat: a
# restarted discovery that pushed before hearing every workload would hand out empty endpoint sets.
DISCOVERY_FAST = ("--warmup", "1.2", "--expiry", "2", "--debounce-quiet", "0.01", "--debounce-max", "0.1")
SIDECARS = ("reviews-v1-sidecar", "reviews-v2-sidecar", "productpage-sidecar")


def vs_yaml(weights: dict[str, int], name: str = "reviews") -> str:
    routes = "".join(
        f"        - destination:\n            host: {name}\n            subset: {subset}\n          weight: {w}\n"
        for subset, w in weights.items()
    )
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata:\n  name: {name}\n  namespace: default\n"
        f"spec:\n  hosts:\n    - {name}\n  http:\n    - route:\n{routes}"
    )


@dataclass
class DemoMesh:
    nats: EmbeddedNats
    group: ProcessGroup
    ports: DemoPorts
    root: str

    # -- operator actions (each opens its own short bus connection, as meshctl does)
    def _bus(self, call: Callable[[BusConnection], Awaitable[T]]) -> T:
        async def go() -> T:
            bus = BusConnection(BusSettings(url=self.nats.url, name="e2e", root=self.root))
            await asyncio.wait_for(bus.connect(wait=True), 10)
            try:
                return await call(bus)
            finally:
                await bus.close()

        return asyncio.run(go())

    def apply(self, text: str, file: str = "e2e.yaml") -> ApplyReply:
        return self._bus(lambda bus: ConfigClient(bus, timeout=5).apply([Document(file, text)]))

    def apply_demo_config(self) -> ApplyReply:
        docs = [Document(str(p), p.read_text()) for p in sorted(DEMO_CONFIG.glob("*.yaml"))]
        return self._bus(lambda bus: ConfigClient(bus, timeout=5).apply(docs))

    def delete(self, kind: str, name: str, namespace: str = "default") -> DeleteReply:
        ref = ResourceRef(kind, namespace, name)
        return self._bus(lambda bus: ConfigClient(bus, timeout=5).delete([ref]))

    def proxy_status(self) -> list[ProxyView]:
        return self._bus(lambda bus: proxy_status(bus, timeout=1.0))

    # -- traffic
    def get_reviews(self) -> dict[str, Any]:
        r = http_get(self.ports.client_outbound, "/", host="reviews")
        if r.status != 200:
            raise AssertionError(f"reviews answered {r.status}: {r.body[:300]!r}")
        return dict(json.loads(r.body))

    def versions(self, n: int) -> collections.Counter[str]:
        return collections.Counter(self.get_reviews()["version"] for _ in range(n))

    def wait_ready(self, timeout: float = 20.0) -> None:
        for name, port in (
            ("reviews-v1-sidecar", self.ports.v1_admin),
            ("reviews-v2-sidecar", self.ports.v2_admin),
            ("productpage-sidecar", self.ports.client_admin),
        ):

            def probe(port: int = port) -> bool:
                return is_ready(port) or self._no_deaths()

            wait_for(f"{name} /ready", probe, timeout)

    def _no_deaths(self) -> bool:
        dead = self.group.dead()
        if dead:
            raise AssertionError(f"exited: {[p.name for p in dead]}")
        return False

    def config_version(self, admin_port: int) -> str:
        info = json.loads(http_get(admin_port, "/server_info").body)
        return str(info["config_version"])


def start_demo(
    tmp_path: Path,
    group: ProcessGroup,
    *,
    root: str = "e2e",
    apply: bool = True,
    mtls: bool = True,
    extra_args: dict[str, tuple[str, ...]] | None = None,
) -> DemoMesh:
    """NATS, then every `meshctl up` child (fast discovery timers; sidecars with bootstrap tokens
    as `meshctl up` mints them unless ``mtls=False``), demo config applied, sidecars ready.
    ``extra_args``: more command-line arguments for the children named."""
    nats = EmbeddedNats(port=0, store_dir=str(tmp_path / "nats"))
    nats.start()
    base = free_port_block(DemoPorts.count())
    group.env.update(MESHBUS_NATS_URL=nats.url, MESHBUS_SUBJECT_ROOT=root)
    mesh = DemoMesh(nats, group, DemoPorts.starting_at(base), root)
    try:
        plan = children(tmp_path, python=PYTHON, ports_from=base)
        tokens: dict[str, str] = {}
        for child in plan:
            argv = child.argv + DISCOVERY_FAST if child.name == "meshbus-discovery" else child.argv
            argv += (extra_args or {}).get(child.name, ())
            env = dict(child.env)
            if child.identity and mtls:
                if not tokens:
                    wanted = {c.name: c.identity for c in plan if c.identity}
                    tokens = asyncio.run(mint_tokens(nats.url, root, wanted, time.monotonic() + 20))
                env["MESHBUS_TOKEN"] = tokens[child.name]
            group.spawn(child.name, argv, env=env)
        if apply:
            wait_for("meshbus-config to take the demo config", lambda: mesh.apply_demo_config(), 20)
        mesh.wait_ready()
    except BaseException:
        group.stop_all()
        nats.cleanup()
        raise
    return mesh


def poll_versions(mesh: DemoMesh, want: Callable[[collections.Counter[str]], bool], timeout: float) -> float:
    """Send requests until a window of 20 satisfies ``want``; seconds it took (AssertionError on timeout)."""
    start = time.monotonic()
    window: collections.deque[str] = collections.deque(maxlen=20)
    while time.monotonic() - start < timeout:
        window.append(mesh.get_reviews()["version"])
        if len(window) == window.maxlen and want(collections.Counter(window)):
            return time.monotonic() - start
    raise AssertionError(
        f"traffic did not follow within {timeout}s; last window {collections.Counter(window)}"
    )


class Traffic:
    """Requests back to back in a thread, counted by what ``send`` returns; every failure is kept."""

    def __init__(self, send: Callable[[], str]) -> None:
        self.send = send
        self.ok: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-traffic", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.ok[self.send()] += 1
            except Exception as exc:
                self.failures.append(repr(exc))

    def total(self) -> int:
        return sum(self.ok.values()) + len(self.failures)

    def wait_more(self, n: int, timeout: float = 10.0) -> None:
        target = self.total() + n
        wait_for(f"{n} more requests", lambda: self.total() >= target, timeout)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
