"""Discovery + real agents on a real nats-server: snapshot, ACK -> SYNCED, NACK, debounce, incremental."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from ruamel.yaml import YAML

from meshbus.bus.embedded import EmbeddedNats
from meshbus.bus.schemas.discovery import APP_HEALTHY, APP_UNHEALTHY
from meshbus.control.discovery.client import proxy_config
from tests.support.unenforced import (
    KEEPALIVE_FATE,
    UNEVALUABLE_POLICY_FATE,
    keepalive_rule,
    unevaluable_authorization_policy,
)

from .discovery_helpers import FAST, Mesh, dr, vs, wait_status, wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def mesh(nats_server: EmbeddedNats, subject_root: str) -> AsyncIterator[Mesh]:
    m = await Mesh(nats_server.url, subject_root).start()
    try:
        yield m
    finally:
        await m.close()


async def test_register_snapshot_ack_synced_and_proxy_config(mesh: Mesh) -> None:
    await mesh.put(dr())
    await mesh.put(vs(100))
    await mesh.discovery()
    r1, r2, pp = await asyncio.gather(
        mesh.sim("reviews", "v1"), mesh.sim("reviews", "v2"), mesh.sim("productpage")
    )
    for s in (r1, r2, pp):
        assert s.agent.ready.is_set() and s.swaps, "start() returns with a runtime applied"
    await wait_until(
        lambda: pp.endpoints("reviews") == ["10.1.0.1", "10.1.0.2"], what="both reviews endpoints"
    )
    assert pp.weights() == [100.0]
    st = await wait_status(mesh, lambda st: len(st) == 3 and all(v.status == "SYNCED" for v in st.values()))
    assert st[pp.node].row.acked_version == pp.version and st[pp.node].row.service == "productpage"
    cfg = await proxy_config(mesh.ops, pp.node)
    # the runtime keeps the version it was built from when the same content comes back renumbered
    assert cfg.version == pp.version and cfg.runtime["version"] == pp.agent.runtime.version
    assert {r["kind"] for r in cfg.resources} == {"ServiceEntry", "VirtualService", "DestinationRule"}


async def test_a_burst_of_applies_is_one_push_and_traffic_shift_follows(mesh: Mesh) -> None:
    await mesh.put(dr())
    await mesh.put(vs(100))
    d = await mesh.discovery(settings=dataclasses.replace(FAST, debounce_quiet=0.15, debounce_max=1.0))
    sims = await asyncio.gather(*(mesh.sim("reviews", v) for v in ("v1", "v2")), mesh.sim("productpage"))
    await wait_status(mesh, lambda st: len(st) == 3 and all(v.status == "SYNCED" for v in st.values()))
    await wait_until(lambda: d.queue.in_flight == 0 and not d.debouncer.pending, what="idle")
    before = [len(s.swaps) for s in sims]
    cycles = d.stats.cycles
    for w in (90, 80, 70, 60, 50):  # five applies in a row
        await mesh.put(vs(w))
    await wait_until(lambda: all(s.weights() == [50.0, 50.0] for s in sims), what="50/50 everywhere")
    # 50/50 is the last apply, so the watch has delivered all five: whatever else they caused is now
    # pending in the debouncer or the push queue. Once both are empty, nothing else can follow.
    await wait_until(lambda: d.queue.in_flight == 0 and not d.debouncer.pending, what="idle")
    assert [len(s.swaps) - b for s, b in zip(sims, before, strict=True)] == [1, 1, 1]
    assert d.stats.cycles - cycles == 1
    assert d.stats.deltas >= 3, "a one-resource change goes out as a delta"


async def test_nack_is_visible_and_the_proxy_keeps_its_last_good_runtime(mesh: Mesh) -> None:
    await mesh.put(dr())
    await mesh.put(vs(100))
    d = await mesh.discovery()
    pp, _reviews = await asyncio.gather(mesh.sim("productpage"), mesh.sim("reviews"))
    await wait_until(lambda: pp.weights() == [100.0], what="productpage routes to reviews")
    await wait_status(mesh, lambda st: st[pp.node].status == "SYNCED")
    good, good_version, swaps = pp.agent.runtime, pp.version, len(pp.swaps)
    # Valid for the schema (discovery sends it), but this proxy cannot build it: a regex that does not compile.
    await mesh.put(vs(50, extra={"match": [{"uri": {"regex": "/(api"}}]}))
    st = await wait_status(mesh, lambda st: st[pp.node].status == "NACK")
    assert "spec.http[0].match[0].uri.regex" in st[pp.node].row.nack_error
    assert st[pp.node].row.acked_version == good_version  # VERSION column: what it still runs
    assert pp.agent.runtime is good and len(pp.swaps) == swaps and pp.weights() == [100.0]
    pushes, seen = d.stats.pushes, st[pp.node].row.last_seen
    # A resend would answer the NACK itself or a later heartbeat that still reports the error. Once
    # discovery has had a heartbeat newer than the NACK and has nothing pending, none can follow.
    await wait_status(mesh, lambda st: st[pp.node].row.last_seen > seen)
    await wait_until(lambda: d.queue.in_flight == 0 and not d.debouncer.pending, what="idle")
    assert d.stats.pushes == pushes, "held after NACK: the refused snapshot is not resent"
    await mesh.put(vs(50))
    await wait_status(mesh, lambda st: st[pp.node].status == "SYNCED")
    assert pp.weights() == [50.0, 50.0] and pp.version > good_version


async def test_a_stored_value_that_does_not_validate_is_skipped_and_the_last_good_one_stays(
    mesh: Mesh,
) -> None:
    """Only meshbus-config writes the bucket, and it validates; a value it would refuse (written around it,
    or by a newer version) is not pushed: discovery validates with the proxies' models and keeps the key's
    last good value, so no proxy is sent a snapshot it must refuse."""
    await mesh.put(dr())
    await mesh.put(vs(100))
    d = await mesh.discovery()
    pp, _reviews = await asyncio.gather(mesh.sim("productpage"), mesh.sim("reviews"))
    await wait_status(mesh, lambda st: st[pp.node].status == "SYNCED")
    version = pp.version
    await mesh.put(vs(50, extra={"bogusRetryKnob": True}))
    await wait_until(lambda: d.config.bad_values == 1, what="the bad value counted")
    await mesh.put(vs(80))  # the next good value of the same key goes out as usual
    await wait_until(lambda: pp.weights() == [80.0, 20.0], what="80/20 at productpage")
    st = await wait_status(mesh, lambda st: st[pp.node].status == "SYNCED")
    assert not st[pp.node].row.nack_error and pp.version > version


async def test_sidecar_egress_limits_what_a_change_reaches(mesh: Mesh) -> None:
    await mesh.put(dr())
    await mesh.put(vs(100))
    await mesh.put(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "ratings-egress", "namespace": "default"},
            "spec": {
                "workloadSelector": {"labels": {"app": "ratings"}},
                "egress": [{"hosts": ["./details"]}],
            },
        }
    )
    await mesh.discovery()
    pp, ratings = await asyncio.gather(mesh.sim("productpage"), mesh.sim("ratings"))
    await mesh.sim("reviews")
    await wait_until(lambda: pp.endpoints("reviews") == ["10.1.0.3"], what="reviews endpoint at productpage")
    assert "VirtualService.default.reviews" not in ratings.resources()
    ratings_swaps = len(ratings.swaps)
    await mesh.put(vs(50))
    await wait_until(lambda: pp.weights() == [50.0, 50.0], what="productpage follows")
    # details is in ratings' egress: its push comes after anything the VirtualService change sent ratings
    await mesh.sim("details")
    await wait_until(lambda: ratings.endpoints("details") != [], what="ratings sees details")
    assert len(ratings.swaps) == ratings_swaps + 1, [(r.version, sorted(r.clusters)) for r in ratings.swaps]
    assert "VirtualService.default.reviews" not in ratings.resources()


async def test_meshctl_proxy_status_and_proxy_config(
    mesh: Mesh, nats_server: EmbeddedNats, subject_root: str
) -> None:
    await mesh.put(dr())
    await mesh.put(vs(100))
    await mesh.discovery()
    pp, _reviews = await asyncio.gather(mesh.sim("productpage"), mesh.sim("reviews"))
    await wait_until(lambda: pp.weights() == [100.0], what="productpage routes to reviews")
    await mesh.put(vs(50, extra={"match": [{"uri": {"regex": "/(api"}}]}))  # valid, but not buildable
    await wait_status(mesh, lambda st: st[pp.node].status == "NACK")

    def meshctl(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "meshbus.control.cli", *args, "--nats", nats_server.url]
        return subprocess.run(
            [*cmd, "--subject-root", subject_root], capture_output=True, text=True, timeout=20
        )

    table = await asyncio.to_thread(meshctl, "proxy-status")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    [row] = [r for r in rows if r.startswith(pp.node)]
    assert header.split() == ["NAME", "WORKLOAD", "NAMESPACE", "VERSION", "STATUS", "APP", "AGE"]
    assert row.split()[:5] == [f"{pp.node}.default", "productpage-v1", "default", str(pp.version), "NACK"]
    assert "spec.http[0].match[0].uri.regex: invalid regex '/(api'" in row
    out = await asyncio.to_thread(meshctl, "proxy-config", f"{pp.node}.default", "-o", "json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["proxy"] == pp.node and doc["version"] == pp.version
    assert any(r["kind"] == "VirtualService" for r in doc["resources"])
    assert doc["runtime"]["version"] == pp.agent.runtime.version


async def test_an_unhealthy_app_leaves_every_endpoint_set_and_proxy_status_shows_it(
    mesh: Mesh, nats_server: EmbeddedNats, subject_root: str
) -> None:
    await mesh.discovery()
    pp, v1, v2 = await asyncio.gather(mesh.sim("productpage"), mesh.sim("reviews"), mesh.sim("reviews", "v2"))
    both = sorted([v1.agent.workload.address, v2.agent.workload.address])
    await wait_until(lambda: pp.endpoints("reviews") == both, what="both reviews endpoints")
    sick = "GET :9080/healthz answered 500 (3 failure(s) in a row)"
    v2.agent.set_app_health(APP_UNHEALTHY, sick)
    took = await wait_until(
        lambda: pp.endpoints("reviews") == both[:1], what="v2 out of productpage's endpoints"
    )
    assert v1.endpoints("reviews") == both[:1]  # out of every snapshot, its own service's included
    assert v2.version > 0 and v2.node in (await mesh.status())  # still registered, still configured
    table = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "meshbus.control.cli", "proxy-status", "--nats", nats_server.url,
         "--subject-root", subject_root],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    rows = {r.split()[0]: r for r in table.stdout.splitlines()[1:]}
    assert f"UNHEALTHY: {sick}" in rows[f"{v2.node}.default"]
    assert rows[f"{pp.node}.default"].split()[5] == "-"  # not probed
    v2.agent.set_app_health(APP_HEALTHY, "GET :9080/healthz answered 200")
    back = await wait_until(lambda: pp.endpoints("reviews") == both, what="v2 back")
    print(f"unhealthy endpoint out in {took * 1000:.0f} ms, back in {back * 1000:.0f} ms")


def _fate_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    out = [r.getMessage() for r in caplog.records if r.name == "meshbus.proxy.mesh.agent"]
    return [m for m in out if "NOT ENFORCED" in m]


async def test_a_proxy_logs_what_it_does_not_enforce_once_per_resource_content(
    mesh: Mesh, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 10: not per request, not again for a later snapshot that leaves the resource as it was."""
    load = YAML(typ="safe").load
    await mesh.put(load(unevaluable_authorization_policy("productpage-readers", "productpage")))
    await mesh.put({**dr(), "spec": {**dr()["spec"], **load(keepalive_rule("reviews"))["spec"]}})
    await mesh.put(vs(100))
    await mesh.discovery()
    await mesh.sim("reviews", "v1")
    await mesh.sim("reviews", "v2")
    caplog.clear()  # the reviews sidecars were told of the rule too; what follows is productpage's
    with caplog.at_level(logging.WARNING, logger="meshbus.proxy.mesh.agent"):
        pp = await mesh.sim("productpage")
        first = pp.version
        # the sidecar may already hold a later snapshot (its own registration's push): the lines
        # name the first one that carried the resources, and no later one repeats them
        told = {int(m.split(":")[1].split(" v")[1]) for m in _fate_lines(caplog)}
        assert len(told) == 1 and min(told) <= first, told
        assert sorted(_fate_lines(caplog)) == [
            f"config: snapshot v{min(told)}: AuthorizationPolicy default/productpage-readers: "
            f"{UNEVALUABLE_POLICY_FATE}",
            f"config: snapshot v{min(told)}: DestinationRule default/reviews: {KEEPALIVE_FATE}",
        ]
        caplog.clear()
        await mesh.put(vs(50))  # a new version, the policy and the rule as they were: nothing to tell
        await wait_until(lambda: pp.weights() == [50.0, 50.0], what="the 50/50 snapshot")
        assert pp.version > first and _fate_lines(caplog) == []

        writers = unevaluable_authorization_policy(
            "productpage-readers", "productpage", "cluster.local/ns/default/sa/writer"
        )
        await mesh.put(load(writers))  # the policy changed: told again
        await wait_until(lambda: bool(_fate_lines(caplog)), what="the changed policy's warning")
        assert _fate_lines(caplog) == [
            f"config: snapshot v{pp.version}: AuthorizationPolicy default/productpage-readers: "
            f"{UNEVALUABLE_POLICY_FATE}"
        ]
