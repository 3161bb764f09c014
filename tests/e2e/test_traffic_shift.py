"""Issue 4, done-when 1: a VirtualService shift reaches real traffic within a second; a bad one is refused."""

from __future__ import annotations

import pytest

from meshbus.bus.errors import BadRequestError
from tests.support.mesh import DemoMesh, poll_versions, vs_yaml

pytestmark = pytest.mark.timeout(60)


def test_shift_v1_to_half_and_half_follows_within_a_second(demo_mesh: DemoMesh) -> None:
    demo_mesh.apply(vs_yaml({"v1": 100}))
    poll_versions(demo_mesh, lambda c: c["v1"] == 20, timeout=5)
    assert demo_mesh.versions(100) == {"v1": 100}

    demo_mesh.apply(vs_yaml({"v1": 50, "v2": 50}))
    took = poll_versions(demo_mesh, lambda c: c["v2"] >= 4, timeout=1.0)  # P(<4 of 20 | 50/50) ~ 0.1 %
    print(f"traffic followed the shift after {took * 1000:.0f} ms")
    seen = demo_mesh.versions(200)
    assert 60 <= seen["v1"] <= 140 and seen["v1"] + seen["v2"] == 200, seen


def test_invalid_virtual_service_is_refused_and_traffic_stays(demo_mesh: DemoMesh) -> None:
    demo_mesh.apply(vs_yaml({"v1": 100}))
    poll_versions(demo_mesh, lambda c: c["v1"] == 20, timeout=5)
    version_before = demo_mesh.config_version(demo_mesh.ports.client_admin)

    with pytest.raises(BadRequestError) as info:
        demo_mesh.apply(vs_yaml({"v1": 100, "v2": -10}), file="bad-weights.yaml")  # a negative weight
    message = str(info.value)
    assert "bad-weights.yaml" in message and "VirtualService default/reviews" in message, message
    assert "spec.http[0].route" in message and "weight" in message, message

    assert demo_mesh.versions(50) == {"v1": 50}
    assert demo_mesh.config_version(demo_mesh.ports.client_admin) == version_before
