"""A standalone proxy logs what it does not enforce: once per config version, never per request."""

from __future__ import annotations

import logging

import pytest

from tests.integration.proxy.conftest import ProxyFactory, UpstreamFactory, service_entry
from tests.integration.proxy.upstreams import fetch
from tests.support.unenforced import (
    KEEPALIVE_FATE,
    UNEVALUABLE_POLICY_FATE,
    joined,
    keepalive_rule,
    unevaluable_authorization_policy,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

SIDECAR = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: [./*]}]
"""
POLICY = joined(
    unevaluable_authorization_policy("reviews-readers", "reviews"), SIDECAR, keepalive_rule("reviews")
)


def fate_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "NOT ENFORCED" in r.getMessage()]


@pytest.mark.parametrize("isolate_loader", [False, True], ids=["in-process", "isolated-loader"])
async def test_standalone_proxy_logs_each_unenforced_item_once_per_version(
    upstreams: UpstreamFactory, proxy: ProxyFactory, caplog: pytest.LogCaptureFixture, isolate_loader: bool
) -> None:
    u = await upstreams("v1")
    text = service_entry("reviews", [u]) + POLICY
    with caplog.at_level(logging.WARNING, logger="meshbus.proxy.adapters.server"):
        p = await proxy(text, isolate_loader=isolate_loader)
    path = p.path
    assert sorted(fate_lines(caplog)) == [
        f"config: {path}:25: AuthorizationPolicy default/reviews-readers: {UNEVALUABLE_POLICY_FATE}",
        f"config: {path}:27: Sidecar default/default: NOT ENFORCED — a standalone proxy routes to every "
        "service in its file; Sidecar scoping is done by meshbus-discovery in mesh mode",
        f"config: {path}:41: DestinationRule default/reviews: {KEEPALIVE_FATE}",
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="meshbus"):
        for _ in range(
            3
        ):  # the DENY applies without its condition, and this caller is not the principal it names
            assert (await fetch(p.port, "/")).status == 200
    assert fate_lines(caplog) == []  # requests log nothing

    with caplog.at_level(logging.WARNING, logger="meshbus.proxy.adapters.server"):
        p.write_config(text.replace("maxRetries: 2", "maxRetries: 3"))
        assert await p.server.reload()
    assert len(fate_lines(caplog)) == 3  # a new version: told again
