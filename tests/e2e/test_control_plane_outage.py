"""Issue 4, done-when 2: killing NATS, meshbus-config or meshbus-discovery under traffic loses no
request, and once they are back a new apply still converges through the real sidecars."""

from __future__ import annotations

import pytest

from meshbus.bus.errors import BusError
from tests.support.mesh import DemoMesh, Traffic, poll_versions, vs_yaml
from tests.support.processes import wait_for

pytestmark = pytest.mark.timeout(60)


def _all_synced(mesh: DemoMesh) -> bool:
    views = mesh.proxy_status()
    return len(views) == 3 and all(v.status == "SYNCED" for v in views)


def _apply_when_back(mesh: DemoMesh, text: str) -> None:
    def attempt() -> bool:
        try:
            mesh.apply(text)
        except BusError:
            return False
        return True

    wait_for("meshbus-config to take an apply again", attempt, timeout=15)


@pytest.mark.parametrize("victim", ["nats", "meshbus-config", "meshbus-discovery"])
def test_outage_loses_no_request_and_apply_converges_after(demo_mesh: DemoMesh, victim: str) -> None:
    demo_mesh.apply(vs_yaml({"v1": 100}))
    poll_versions(demo_mesh, lambda c: c["v1"] == 20, timeout=5)

    with Traffic(lambda: demo_mesh.get_reviews()["version"]) as traffic:
        traffic.wait_more(20)
        if victim == "nats":
            demo_mesh.nats.kill()
            traffic.wait_more(100)  # the sidecars serve on their last snapshot meanwhile
            demo_mesh.nats.start()  # same port, same JetStream store
        else:
            proc = demo_mesh.group.get(victim)
            proc.kill()
            traffic.wait_more(100)
            demo_mesh.group.respawn(proc)
        # every sidecar reconnected and reports the version it runs
        wait_for("all proxies SYNCED again", lambda: _all_synced(demo_mesh), timeout=20)
        _apply_when_back(demo_mesh, vs_yaml({"v1": 50, "v2": 50}))
        took = poll_versions(demo_mesh, lambda c: c["v2"] >= 4, timeout=5)
        print(f"after {victim} came back, traffic followed a new apply in {took * 1000:.0f} ms")
        traffic.wait_more(20)

    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok["v1"] > 100 and traffic.ok["v2"] > 0, traffic.ok
