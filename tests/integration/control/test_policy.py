"""meshbus-policy against a real nats-server: shared rate limit counters, and JWT key sets from a local
identity provider reaching a real proxy agent's snapshot through meshbus-discovery."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from meshbus.bus import rpc
from meshbus.bus.errors import UnavailableError
from meshbus.bus.schemas.ratelimit import LeaseReply, LeaseRequest
from meshbus.control.policy.jwks import JwksPolicy
from meshbus.control.policy.service import PolicyService
from meshbus.proxy.filters.global_ratelimit import Budgets, GlobalRule
from meshbus.proxy.mesh.ratelimit_client import NatsLeaseClient
from tests.integration.control.discovery_helpers import Mesh, wait_until
from tests.support.bounded import within
from tests.support.jwks import Issuer, JwksServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(40)]

FAST_KEYS = JwksPolicy(refresh=0.4, retry=0.1, retry_max=0.2, max_age=2.0)


@pytest.fixture
async def mesh(nats_server: Any, subject_root: str) -> AsyncIterator[Mesh]:
    m = await Mesh(nats_server.url, subject_root).start()
    try:
        yield m
    finally:
        await m.close()


async def policy(mesh: Mesh, name: str, jwks: JwksPolicy = FAST_KEYS) -> PolicyService:
    bus = await mesh.connect(name)
    svc = PolicyService(bus, jwks)
    await svc.start()
    stop = svc.stop

    async def stop_once() -> None:
        await within(f"{name} to stop", stop())

    mesh.replicas.append(_Stopper(stop_once))  # type: ignore[arg-type]
    return svc


class _Stopper:
    """Lets Mesh.close stop a policy replica with the discovery replicas."""

    def __init__(self, stop: Any) -> None:
        self.stop = stop
        self.replica_id = "policy"


async def test_leases_from_two_policy_replicas_never_exceed_the_limit(mesh: Mesh) -> None:
    await policy(mesh, "policy-a")
    await policy(mesh, "policy-b")
    subject = mesh.ops.subjects.policy("ratelimit")

    async def ask(i: int) -> LeaseReply:
        req = LeaseRequest("default/api/0", 100, "Hour", hits=7, node=f"n{i}")
        return await rpc.request(mesh.ops, subject, req, LeaseReply, timeout=5)

    replies = await asyncio.gather(*(ask(i) for i in range(40)))  # 280 tokens asked for, 100 to give
    assert sum(r.granted for r in replies) == 100
    assert all(r.granted <= 7 for r in replies)
    assert min(r.remaining for r in replies) == 0
    assert len({r.window for r in replies}) == 1 and all(0 < r.reset <= 3600 for r in replies)
    later = await ask(99)
    assert (later.granted, later.remaining) == (0, 0)
    other = await rpc.request(mesh.ops, subject, LeaseRequest("default/api/1", 5, "Hour", 2), LeaseReply)
    assert other.granted == 2  # each descriptor counts apart


async def test_a_sidecar_without_meshbus_policy_gets_its_answer_at_once(mesh: Mesh) -> None:
    budgets = Budgets(NatsLeaseClient(mesh.ops))
    rule = GlobalRule("default/api/0", 10, "Second")
    start = time.monotonic()
    fut = budgets.ask("default/api/0", rule, timeout=2.0)
    with pytest.raises(UnavailableError):
        await fut
    assert time.monotonic() - start < 0.5  # "no responders", not the 2 s timeout
    assert not budgets.settle("default/api/0", fut)
    assert budgets.ask("default/api/0", rule, timeout=2.0) is None  # backing off: the failure mode at once


def ra(name: str, **rule: Any) -> dict[str, Any]:
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "RequestAuthentication",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "jwtRules": [rule]},
    }


def inlined(sim: Any, name: str) -> str | None:
    res = sim.resources().get(f"RequestAuthentication.default.{name}")
    if res is None:
        return None
    jwks = res["spec"]["jwtRules"][0].get("jwks")
    return None if jwks is None else json.dumps(json.loads(jwks), sort_keys=True)


def norm(jwks: str) -> str:
    return json.dumps(json.loads(jwks), sort_keys=True)


async def test_key_sets_are_fetched_refreshed_kept_while_fetches_fail_then_dropped(mesh: Mesh) -> None:
    idp = Issuer(algorithms=("ES256",))
    rotated = Issuer(algorithms=("ES256",))
    with JwksServer(idp.jwks()) as srv:
        await mesh.discovery()
        reviews = await mesh.sim("reviews")
        ratings = await mesh.sim("ratings")
        await policy(mesh, "policy-a")
        await policy(mesh, "policy-b")  # two replicas share the work through the bucket
        await mesh.put(ra("by-uri", issuer=idp.iss, jwksUri=srv.url))
        await mesh.put(ra("by-issuer", issuer=srv.base))  # OIDC discovery

        await wait_until(lambda: inlined(reviews, "by-uri") == norm(idp.jwks()), 10, "keys in the snapshot")
        await wait_until(lambda: inlined(reviews, "by-issuer") == norm(idp.jwks()), 5, "OIDC keys")
        assert "/.well-known/openid-configuration" in srv.requests
        assert "RequestAuthentication.default.by-uri" not in ratings.resources()  # not selected
        rt = reviews.agent.runtime
        assert rt is not None
        route = rt.config_dump()["listeners"]["inbound"]["virtualHosts"][0]["routes"][0]
        assert [r["keys"] for r in route["jwtRules"]] == [1, 1]  # the proxy built verifiers from them

        srv.set_jwks(rotated.jwks())  # the provider rotates its key: the next refresh brings it
        await wait_until(lambda: inlined(reviews, "by-uri") == norm(rotated.jwks()), 5, "the rotated key")

        srv.set_failing(True)  # the provider goes down: the last good keys stay...
        failed_at = len(srv.requests)
        await wait_until(lambda: len(srv.requests) >= failed_at + 4, 5, "failed refreshes")
        assert inlined(reviews, "by-uri") == norm(rotated.jwks())
        # ...until their maximum age (2 s here), then tokens of that issuer get 401
        await wait_until(lambda: inlined(reviews, "by-uri") is None, 5, "keys past their maximum age")

        srv.set_failing(False)
        await wait_until(lambda: inlined(reviews, "by-uri") == norm(rotated.jwks()), 5, "keys again")
