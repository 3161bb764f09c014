"""A real nats-server for tests, started through meshbus's own embedded launcher."""

from __future__ import annotations

import pytest

from meshbus.bus.embedded import EmbeddedNats, find_binary
from meshbus.bus.errors import EmbeddedServerError


def require_binary() -> str:
    try:
        return find_binary()
    except EmbeddedServerError as exc:
        pytest.skip(f"nats-server binary not available: {exc}")


def start_server(**kwargs: object) -> EmbeddedNats:
    require_binary()
    server = EmbeddedNats(port=0, **kwargs)  # type: ignore[arg-type]
    server.start()
    return server
