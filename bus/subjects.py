"""The one place that spells NATS subjects.

Every subject lives under a configurable root (default ``mesh``), then a protocol
version token, so two meshes can share one NATS and a v2 protocol can run beside v1:

    <root>.v1.<component>.<verb>[.<id>]

Nothing else in meshbus builds a subject by hand (tests/test_imports.py checks it).
A later component adds its subjects as methods here, with its tokens validated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_ROOT = "mesh"
PROTOCOL = "v1"

# NATS allows almost anything in a token; we keep to the recommended set so ids
# from any source (filter ids, proxy ids, KV keys) can be embedded safely.
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_KV_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_=-]*$")
_ROOT_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def validate_token(token: str, what: str = "token") -> str:
    if not _TOKEN_RE.match(token):
        raise ValueError(f"meshbus: invalid subject {what} {token!r}: use letters, digits, '-' and '_' only")
    return token


def escape_token(value: str) -> str:
    """Escape an id with dots or other characters into one subject token.

    Reversible: ``_`` becomes ``__``, ``.`` becomes ``_d``, and any other byte outside
    the safe set becomes ``_xHH``. ``meshbus.filters.http.ratelimit`` -> ``meshbus_dfilters_dhttp_dratelimit``.
    """
    out: list[str] = []
    for ch in value:
        if ch == "_":
            out.append("__")
        elif ch == ".":
            out.append("_d")
        elif ch.isascii() and (ch.isalnum() or ch == "-"):
            out.append(ch)
        else:
            out.extend(f"_x{b:02x}" for b in ch.encode())
    if not out:
        raise ValueError("meshbus: cannot escape an empty id into a subject token")
    return "".join(out)


def unescape_token(token: str) -> str:
    out = bytearray()
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "_":
            nxt = token[i + 1 : i + 2]
            if nxt == "_":
                out += b"_"
                i += 2
            elif nxt == "d":
                out += b"."
                i += 2
            elif nxt == "x":
                out.append(int(token[i + 2 : i + 4], 16))
                i += 4
            else:
                raise ValueError(f"meshbus: bad escape in subject token {token!r}")
        else:
            out += ch.encode()
            i += 1
    return out.decode()


@dataclass(frozen=True, slots=True)
class Subjects:
    """Subject builders for one mesh (one root)."""

    root: str = DEFAULT_ROOT

    def __post_init__(self) -> None:
        if not _ROOT_RE.match(self.root):
            raise ValueError(f"meshbus: invalid subject root {self.root!r}")

    def _s(self, *tokens: str) -> str:
        return ".".join((self.root, PROTOCOL, *tokens))

    # -- everything under this mesh (for permissions and debugging taps)
    def all(self) -> str:
        return self._s(">")

    def component_all(self, component: str) -> str:
        """Every subject of one component (``mesh.v1.config.>``): what `meshctl up` shows it serves."""
        return self._s(validate_token(component, "component"), ">")

    # -- control plane: config (Galley role)
    def config(self, verb: str) -> str:
        """Request/reply endpoints of meshbus-config: apply, delete, get, list, history, rollback."""
        return self._s("config", validate_token(verb, "verb"))

    def config_changed(self) -> str:
        """Event published after every stored change (the KV watch is the source of truth)."""
        return self._s("config", "changed")

    # -- control plane: discovery (Pilot role)
    # Every subject a proxy publishes or subscribes to ends with its node id, so a NATS user can be
    # allowed exactly its own (bus/roles.py); discovery checks that the node named in the message is
    # the one in the subject (`node_of`).
    def xds_register(self, node: str) -> str:
        return self._s("xds", "register", validate_token(node, "node id"))

    def xds_register_all(self) -> str:
        """Every proxy's registration (discovery's queue-group endpoint)."""
        return self._s("xds", "register", "*")

    def xds_heartbeat(self, node: str) -> str:
        return self._s("xds", "heartbeat", validate_token(node, "node id"))

    def xds_snapshot(self, node: str) -> str:
        """A proxy's own subject: discovery pushes its snapshots here."""
        return self._s("xds", "snapshot", validate_token(node, "node id"))

    def xds_fetch(self, node: str) -> str:
        return self._s("xds", "fetch", validate_token(node, "node id"))

    def xds_fetch_all(self) -> str:
        """Every proxy's full-snapshot request (discovery's queue-group endpoint)."""
        return self._s("xds", "fetch", "*")

    def xds_ack(self, node: str) -> str:
        return self._s("xds", "ack", validate_token(node, "node id"))

    def xds_status(self) -> str:
        return self._s("xds", "status")

    def xds_hosts(self) -> str:
        """Request/reply (queue group): the service hosts the workload registry holds (config's analysis)."""
        return self._s("xds", "hosts")

    def xds_heartbeat_all(self) -> str:
        """Every proxy's heartbeats: each discovery replica listens (no queue group) to keep the full registry."""
        return self._s("xds", "heartbeat", "*")

    def xds_snapshot_all(self) -> str:
        """Every proxy's snapshot subject (debugging taps and benchmarks, never a proxy)."""
        return self._s("xds", "snapshot", "*")

    def xds_ack_all(self) -> str:
        """Every proxy's ACK/NACK: each discovery replica keeps the whole ledger."""
        return self._s("xds", "ack", "*")

    def xds_deregister(self, node: str) -> str:
        """A draining proxy leaves the registry at once; heard by every replica."""
        return self._s("xds", "deregister", validate_token(node, "node id"))

    def xds_deregister_all(self) -> str:
        return self._s("xds", "deregister", "*")

    def xds_configdump_all(self) -> str:
        """Every proxy's config-dump subject (the operator asks; never a proxy)."""
        return self._s("xds", "configdump", "*")

    def xds_certs_all(self) -> str:
        return self._s("xds", "certs", "*")

    def xds_replica(self) -> str:
        """Discovery replicas announce themselves here; push ownership is hashed over the live ones."""
        return self._s("xds", "replica")

    def xds_config_dump(self, node: str) -> str:
        """A proxy answers here with the snapshot it runs (meshctl proxy-config)."""
        return self._s("xds", "configdump", validate_token(node, "node id"))

    def xds_certs(self, node: str) -> str:
        """A proxy answers here with the certificate it holds (meshctl cert inspect; SDS's view)."""
        return self._s("xds", "certs", validate_token(node, "node id"))

    # -- control plane: CA (Citadel role)
    def ca(self, verb: str) -> str:
        """certify, bundle, token."""
        return self._s("ca", validate_token(verb, "verb"))

    def ca_bundle_changed(self) -> str:
        return self._s("ca", "bundle", "changed")

    def ca_all(self) -> str:
        """Every CA endpoint (its queue group); publishing here is answering CA requests."""
        return self._s("ca", "*")

    # -- control plane: policy
    def policy(self, verb: str) -> str:
        return self._s("policy", validate_token(verb, "verb"))

    def policy_all(self) -> str:
        return self._s("policy", ">")

    def authz_all(self) -> str:
        """Every ``meshbusAuthz`` authorizer (what meshbus-policy serves; what a proxy asks)."""
        return self._s("authz", "*")

    def authz(self, name: str) -> str:
        """A ``meshbusAuthz`` external authorizer (bus/schemas/authz.py): proxies ask, its servers answer."""
        return self._s("authz", validate_token(name, "authorizer name"))

    # -- remote filters: the filter id is dotted, so it is escaped into one token
    def filter_call(self, filter_id: str) -> str:
        return self._s("filter", escape_token(filter_id), "call")

    def filter_all(self) -> str:
        """Every remote filter's subjects: its hooks and info (what a filter host serves; a proxy asks)."""
        return self._s("filter", "*", "*")

    def filter_hook(self, filter_id: str, hook: str) -> str:
        """One hook of a remote filter (bus/schemas/filters.py): hosts serve it in a queue group."""
        return self._s("filter", escape_token(filter_id), validate_token(hook, "hook"))

    def filter_info(self, filter_id: str) -> str:
        """A remote filter's description and config schema (any host of it answers)."""
        return self._s("filter", escape_token(filter_id), "info")

    # -- telemetry
    def telemetry(self, signal: str, node: str) -> str:
        """signal: metrics, spans or logs."""
        return self._s("telemetry", validate_token(signal, "signal"), validate_token(node, "node id"))

    def telemetry_all(self, signal: str) -> str:
        return self._s("telemetry", validate_token(signal, "signal"), "*")

    def telemetry_node(self, node: str) -> str:
        """Every signal of one proxy: what that proxy may publish."""
        return self._s("telemetry", "*", validate_token(node, "node id"))

    def telemetry_every(self) -> str:
        """Every signal of every proxy: what the collector reads."""
        return self._s("telemetry", "*", "*")

    def telemetry_stats(self) -> str:
        """Every meshbus-telemetry replica answers here (no queue group): scatter-gather for top/graph."""
        return self._s("telemetry", "stats")

    def access_log_stream(self) -> str:
        """The JetStream stream that keeps access logs (``<root>_ACCESS_LOGS``; it captures
        ``telemetry_all("logs")``)."""
        return f"{self.root.replace('.', '_')}_ACCESS_LOGS"

    # -- JetStream KV: bucket names and keys are subjects too ($KV.<bucket>.<key>)
    def kv_bucket(self, name: str) -> str:
        """Bucket of this mesh, e.g. ``mesh_config``; dots of the root become ``_``."""
        return f"{self.root.replace('.', '_')}_{validate_token(name, 'bucket')}"

    @staticmethod
    def config_key(kind: str, namespace: str, name: str) -> str:
        """One KV key per resource: ``<Kind>.<namespace>.<name>`` (names are DNS-1123)."""
        for what, tok in (("kind", kind), ("namespace", namespace), ("name", name)):
            if not _KV_TOKEN_RE.match(tok):
                raise ValueError(f"meshbus: invalid {what} {tok!r} for a config key")
        return f"{kind}.{namespace}.{name}"

    @staticmethod
    def kv_stream(bucket: str) -> str:
        """The JetStream stream behind a KV bucket (``KV_<bucket>``, fixed by the KV protocol)."""
        return f"KV_{bucket}"

    @staticmethod
    def kv_key_subject(bucket: str, key: str) -> str:
        """The stream subject a KV key is stored on: ``$KV.<bucket>.<key>``; a key may be a filter (``>``)."""
        return f"{KV_PREFIX}.{bucket}.{key}"

    # -- generic service endpoints (service.py): <root>.v1.<component>.<endpoint>
    def endpoint(self, component: str, name: str) -> str:
        return self._s(validate_token(component, "component"), validate_token(name, "endpoint"))


def node_of(subject: str) -> str:
    """The node id a per-proxy subject ends with (``mesh.v1.xds.fetch.<node>`` -> ``<node>``)."""
    return subject.rsplit(".", 1)[-1]


# JetStream KV subjects: the prefix is fixed by the KV protocol (ADR-8).
KV_PREFIX = "$KV"
JS_API_PREFIX = "$JS.API"


def js_stream(stream: str, *, manage: bool = False) -> list[str]:
    """What a client publishes to read JetStream ``stream`` (NATS permissions; wildcards allowed):
    stream info, message gets, consumers and their flow control and acks; ``manage``: create or
    reconfigure it. The JetStream API names the stream in its subjects (nats.docs, JetStream wire API)."""
    stream = validate_token(stream, "stream")
    api = JS_API_PREFIX
    out = [
        f"{api}.STREAM.INFO.{stream}",
        f"{api}.STREAM.MSG.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}",
        f"{api}.DIRECT.GET.{stream}.>",
        f"{api}.CONSUMER.*.{stream}",
        f"{api}.CONSUMER.*.{stream}.>",
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
    ]
    if manage:
        out += [f"{api}.STREAM.CREATE.{stream}", f"{api}.STREAM.UPDATE.{stream}"]
    return out


def js_bucket(bucket: str, *, put: bool = False, manage: bool = False) -> list[str]:
    """What a client publishes to use KV ``bucket``: reading (get, history, watch) always; ``put``:
    writes to its keys; ``manage``: create or reconfigure the bucket (`js_stream` of its stream)."""
    out = js_stream(Subjects.kv_stream(validate_token(bucket, "bucket")), manage=manage)
    if put:
        out.append(Subjects.kv_key_subject(bucket, ">"))
    return out


def js_api_info() -> str:
    """Account-level JetStream info (clients ask it to learn whether JetStream is on)."""
    return f"{JS_API_PREFIX}.INFO"


# Request/reply inboxes: each connection takes a prefix of its own, so a NATS user can be allowed
# to read replies to its own requests only (nats-py ``inbox_prefix``; its replies arrive on
# ``<prefix>.<nuid>.<token>``).
INBOX_PREFIX = "_INBOX"


def inbox_prefix(kind: str, name: str) -> str:
    """``_INBOX.<kind>.<name>``: kind ``role`` (a component, by role name), ``node`` (a proxy) or
    ``bootstrap`` (a proxy before it has a certificate)."""
    return f"{INBOX_PREFIX}.{validate_token(kind, 'inbox kind')}.{validate_token(name, 'inbox name')}"


def inbox_all(kind: str, name: str | None = None) -> str:
    """Every inbox under a prefix (a subscribe permission)."""
    return f"{inbox_prefix(kind, name) if name else INBOX_PREFIX + '.' + validate_token(kind)}.>"


# NATS micro protocol discovery subjects (ADR-32); the prefix is fixed by the protocol.
MICRO_PREFIX = "$SRV"


def micro_all() -> str:
    """Every micro discovery subject (a component serves them; the operator asks them)."""
    return f"{MICRO_PREFIX}.>"


def micro(verb: str, service: str | None = None, instance: str | None = None) -> str:
    tokens = [MICRO_PREFIX, verb]
    if service is not None:
        tokens.append(validate_token(service, "service name"))
        if instance is not None:
            tokens.append(validate_token(instance, "instance id"))
    return ".".join(tokens)
