"""Plugins against a running proxy: the proxy fixtures of tests/integration/proxy, and a real nats-server."""

from tests.integration.proxy.conftest import proxy, upstreams

__all__ = ["proxy", "upstreams"]
