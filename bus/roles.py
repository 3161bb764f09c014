"""Who may publish and subscribe where on the bus: one role per kind of process.

Every meshbus process connects as a NATS user of its own, and that user's permissions are its role:
only the subjects its job needs (`meshbus.bus.subjects` builds every one). nats-server enforces them
(``authorization { users = [...] }``, rendered by `meshbus.control.cli.bus_auth`); anything else is
refused with a permissions violation and never delivered.

Roles:

- ``operator`` (meshctl): may publish any mesh subject (apply config, create tokens, ask status and
  proxies) and read only its own inbox. It is the only role that may ask for bootstrap tokens.
- components: ``config``, ``discovery``, ``ca``, ``policy``, ``telemetry``, ``filter-host``: each
  serves its own endpoints (queue groups), the micro protocol (``$SRV``) and its health, answers
  requests (``allow_responses``), reads and writes its own KV buckets, and publishes only its own
  events. Replicas of one component share its user.
- ``proxy``: one user per workload identity (the SPIFFE ID of its certificate; nats-server maps the
  certificate's URI SAN to it), allowed only the per-node subjects of the proxies that run with that
  identity: publish its register/fetch/heartbeat/ACK/deregister and its telemetry, subscribe to its
  own snapshot pushes, config-dump and certificate questions, and its own inbox. It may ask the CA,
  policy (rate-limit leases, meshbusAuthz) and remote filters (hooks and info), never answer them.
- ``bootstrap``: a proxy with no certificate yet. It may only ask meshbus-ca to sign (``ca.certify``,
  with its single-use bootstrap token inside) and read the trust bundle events and its inbox.

A new component gets its role by adding a `Permissions` builder here (subjects from
`meshbus.bus.subjects`, added there first), naming it in `COMPONENTS`, and giving the process that
role's credentials (``meshctl up`` does it for every child whose name is ``meshbus-<role>``; see
`meshbus.control.cli.bus_auth`). Its inbox is ``inbox_prefix("role", <role>)`` (`BusSettings.inbox_prefix`).
Sans-IO: plain data in, plain data out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .schemas.jwks import JWKS_BUCKET
from .schemas.ratelimit import RATELIMIT_BUCKET
from .subjects import (
    Subjects,
    inbox_all,
    js_api_info,
    js_bucket,
    js_stream,
    micro_all,
)


@dataclass(frozen=True, slots=True)
class Permissions:
    """One NATS user's permissions (nats.docs "Authorization": deny wins over allow)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False
    """May reply once to each request it received (a service), wherever the reply subject is."""
    deny_publish: tuple[str, ...] = ()
    deny_subscribe: tuple[str, ...] = ()


def _service(
    role: str, *, serve: Iterable[str], publish: Iterable[str] = (), buckets: Iterable[str] = ()
) -> Permissions:
    """A component: its endpoints (``serve``), micro, its inbox, replies, and KV (``buckets``)."""
    return Permissions(
        publish=(*publish, *buckets, js_api_info()),
        subscribe=(*serve, micro_all(), inbox_all("role", role)),
        allow_responses=True,
    )


def config(s: Subjects) -> Permissions:
    return _service(
        "config",
        serve=[s.component_all("config")],
        publish=[s.config_changed(), s.xds_hosts()],  # analysis asks discovery which hosts exist
        buckets=js_bucket(s.kv_bucket("config"), put=True, manage=True),
    )


def discovery(s: Subjects) -> Permissions:
    return _service(
        "discovery",
        serve=[
            s.component_all("discovery"),  # its health endpoint
            s.xds_register_all(),
            s.xds_fetch_all(),
            s.xds_heartbeat_all(),
            s.xds_ack_all(),
            s.xds_deregister_all(),
            s.xds_replica(),
            s.xds_status(),
            s.xds_hosts(),
        ],
        publish=[s.xds_snapshot_all(), s.xds_replica()],
        buckets=[
            *js_bucket(s.kv_bucket("config"), manage=True),  # reads it (--create-config-bucket creates it)
            *js_bucket(s.kv_bucket("discovery"), put=True, manage=True),
            *js_bucket(s.kv_bucket(JWKS_BUCKET)),  # key sets policy fetched, handed to proxies
        ],
    )


def ca(s: Subjects) -> Permissions:
    return _service(
        "ca",
        serve=[s.component_all("ca")],  # certify, token, bundle, health and bundle events
        publish=[s.ca_bundle_changed()],
        buckets=[
            *js_bucket(s.kv_bucket("ca_tokens"), put=True, manage=True),
            *js_bucket(s.kv_bucket("ca_state"), put=True, manage=True),
        ],
    )


def policy(s: Subjects) -> Permissions:
    return _service(
        "policy",
        serve=[s.component_all("policy"), s.authz_all(), s.config_changed()],  # leases, meshbusAuthz, health
        buckets=[
            *js_bucket(s.kv_bucket("config")),  # RequestAuthentication's jwksUri to fetch
            *js_bucket(s.kv_bucket(RATELIMIT_BUCKET), put=True, manage=True),  # global rate-limit counters
            *js_bucket(s.kv_bucket(JWKS_BUCKET), put=True, manage=True),  # the key sets it fetched
        ],
    )


def telemetry(s: Subjects) -> Permissions:
    return _service(
        "telemetry",
        serve=[s.component_all("telemetry")],  # telemetry.<signal>.<node> from proxies, telemetry.stats
        buckets=[
            *js_bucket(s.kv_bucket("config")),  # the Telemetry resources it applies
            *js_stream(s.access_log_stream(), manage=True),  # the access-log stream it keeps
        ],
    )


def filter_host(s: Subjects) -> Permissions:
    return _service("filter-host", serve=[s.filter_all()])  # every filter's hooks and info


def operator(s: Subjects) -> Permissions:
    """meshctl: asks anything of the mesh, answers nothing (no subscription but its inbox)."""
    reads = (*js_stream(s.access_log_stream()), js_api_info())  # meshctl telemetry logs tails the stream
    return Permissions(publish=(s.all(), micro_all(), *reads), subscribe=(inbox_all("role", "operator"),))


def proxy(s: Subjects, nodes: Iterable[str]) -> Permissions:
    """The proxies that run with one workload identity (node ids known when the server config is made)."""
    publish: list[str] = [s.ca("certify"), s.policy("ratelimit"), s.authz_all(), s.filter_all()]  # ask only
    subscribe: list[str] = [s.ca_bundle_changed()]
    for node in sorted(set(nodes)):
        publish += [
            s.xds_register(node),
            s.xds_fetch(node),
            s.xds_heartbeat(node),
            s.xds_ack(node),
            s.xds_deregister(node),
            s.telemetry_node(node),
        ]
        subscribe += [
            s.xds_snapshot(node),
            s.xds_config_dump(node),
            s.xds_certs(node),
            inbox_all("node", node),
        ]
    return Permissions(publish=tuple(publish), subscribe=tuple(subscribe), allow_responses=True)


def bootstrap(s: Subjects) -> Permissions:
    """A proxy before its first certificate: ask the CA to sign, nothing else."""
    return Permissions(
        publish=(s.ca("certify"),),
        subscribe=(s.ca_bundle_changed(), inbox_all("bootstrap")),
    )


COMPONENTS: dict[str, Callable[[Subjects], Permissions]] = {
    "operator": operator,
    "config": config,
    "discovery": discovery,
    "ca": ca,
    "policy": policy,
    "telemetry": telemetry,
    "filter-host": filter_host,
}
"""Every role but ``proxy`` and ``bootstrap`` (those are per identity / shared), by name."""


def component(role: str, s: Subjects) -> Permissions:
    try:
        return COMPONENTS[role](s)
    except KeyError:
        raise ValueError(f"meshbus: no bus role {role!r} (roles: {', '.join(COMPONENTS)})") from None
