"""Credentials for a secured bus: nats-server's config and every process's key, 0600 under one directory.

`meshctl up` (and ``meshctl bus init`` for docker-compose) calls `ensure_bus`, which writes into
``<data-dir>/bus/`` (0700):

- ``nats-server.conf``: TLS with a server certificate signed by the mesh root (``ca_file`` is that
  root, ``verify_and_map``: a proxy's SVID URI SAN names its user), ``allow_non_tls`` for the nkey
  clients, and one user per principal with its role's permissions (`meshbus.bus.roles`).
- ``<role>.nk``: the nkey seed of each component role (operator for meshctl, config, discovery, ca,
  policy, telemetry, filter-host) and ``bootstrap.nk`` (proxies without a certificate yet: ca.certify
  only); ``proxy-<node>.nk`` for a proxy that runs without a certificate (``--no-mtls``).
- ``server-cert.pem``/``server-key.pem``: nats-server's certificate (localhost, 127.0.0.1, ``nats``);
  ``server-ca.pem``: the mesh root, which checks it and the proxies' certificates.
- ``snapshot-signing.pem``: the key meshbus-discovery signs snapshots with; ``snapshot-signing.pub.pem``
  its public half, which meshbus-ca hands to proxies in the trust bundle.

Keys that exist are kept (a restarted mesh keeps its identities and its snapshot key); the server
config and certificate are written anew each time. Why config-file users and not the decentralized
JWT model: see docs/security-bus.md ("Choice"). Who gets which credentials: `child_env`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshbus.bus import roles
from meshbus.bus.connection import ENV_CA, ENV_NKEY, BusSettings
from meshbus.bus.signing import generate_key_pem, load_private_key, public_key_pem
from meshbus.bus.spiffe import DEFAULT_TRUST_DOMAIN, SpiffeId
from meshbus.bus.subjects import Subjects, inbox_prefix
from meshbus.control.ca.issuer import CaMaterial
from meshbus.control.ca.material import write_atomic

BUS_DIR = "bus"
CONF_FILE = "nats-server.conf"
SERVER_CERT, SERVER_KEY = "server-cert.pem", "server-key.pem"
SIGNING_KEY, SIGNING_PUB = "snapshot-signing.pem", "snapshot-signing.pub.pem"
SERVER_CA = "server-ca.pem"
BOOTSTRAP = "bootstrap"
TLS_FIRST_FALLBACK = "100ms"
"""How long nats-server waits for a TLS ClientHello (a proxy with its certificate) before it greets a
plain-text client (an nkey user) with INFO: what each plain connection waits once at connect."""
SERVER_NAMES = ("localhost", "nats")
SERVER_IPS = ("127.0.0.1", "::1")

ENV_SIGNING_KEY = "MESHBUS_SIGNING_KEY"  # meshbus-discovery --signing-key
ENV_SNAPSHOT_KEY = "MESHBUS_SNAPSHOT_KEY"  # meshbus-ca --snapshot-key
ENV_BOOTSTRAP_NKEY = "MESHBUS_NATS_BOOTSTRAP_NKEY"  # meshbus-proxy --nats-bootstrap-nkey
ENV_TRUST_DOMAIN = "MESHBUS_TRUST_DOMAIN"  # meshbus-ca --trust-domain


@dataclass(frozen=True, slots=True)
class ProxyPrincipal:
    node: str
    spiffe_id: str | None = None
    """Its certificate's SPIFFE ID (the NATS user it maps to); None: an nkey of its own."""


@dataclass(frozen=True, slots=True)
class BusFiles:
    """Where `ensure_bus` put everything (paths are absolute)."""

    dir: Path
    server_ca: Path
    """The mesh root: nats-server checks client certificates with it, proxies check the server with it."""
    public_keys: Mapping[str, str] = field(default_factory=dict)
    """principal -> nkey public key (what the server config lists)."""

    @property
    def conf(self) -> Path:
        return self.dir / CONF_FILE

    def nkey(self, principal: str) -> Path:
        return self.dir / f"{principal}.nk"

    @property
    def signing_key(self) -> Path:
        return self.dir / SIGNING_KEY

    @property
    def signing_pub(self) -> Path:
        return self.dir / SIGNING_PUB


def proxy_nkey_name(node: str) -> str:
    return f"proxy-{node}"


def _private(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o600)


def _ensure_nkey(path: Path) -> str:
    """The public key of the seed in ``path``, generating the seed if there is none."""
    if not path.exists():
        _private(path, nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER) + b"\n")
    kp = nkeys.from_seed(bytearray(path.read_bytes().strip()))
    try:
        return str(kp.public_key.decode())
    finally:
        kp.wipe()


def _ensure_signing_key(files: BusFiles) -> None:
    if not files.signing_key.exists():
        _private(files.signing_key, generate_key_pem())
    write_atomic(files.signing_pub, public_key_pem(load_private_key(files.signing_key)), 0o644)


def server_certificate(material: CaMaterial, now: dt.datetime, days: int = 365) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for nats-server, signed by the mesh CA: a plain TLS server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshbus nats-server")]))
        .issuer_name(material.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(min(now + dt.timedelta(days=days), material.signing_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(material.signing_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + material.chain_pem
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return chain, key_pem


def _permissions(p: roles.Permissions) -> dict[str, object]:
    out: dict[str, object] = {
        "publish": {"allow": list(p.publish), **({"deny": list(p.deny_publish)} if p.deny_publish else {})},
        "subscribe": {
            "allow": list(p.subscribe),
            **({"deny": list(p.deny_subscribe)} if p.deny_subscribe else {}),
        },
    }
    if p.allow_responses:
        out["allow_responses"] = True
    return out


def render_config(
    users: Iterable[tuple[str, str, roles.Permissions]], *, cert: Path, key: Path, ca: Path
) -> str:
    """nats-server's config text; ``users``: (kind ``nkey`` or ``user``, its key or name, permissions).

    The values are JSON, which the NATS config format accepts as is (strings quoted, so a SPIFFE ID's
    ``://`` is never read as a comment)."""
    entries = [{kind: name, "permissions": _permissions(perms)} for kind, name, perms in users]
    tls = {
        "cert_file": str(cert),
        "key_file": str(key),
        "ca_file": str(ca),
        "verify_and_map": True,
        "handshake_first": TLS_FIRST_FALLBACK,
    }
    return (
        "# Written by meshctl (meshbus.control.cli.bus_auth) at every `meshctl up`: edits are lost.\n"
        "# Users and permissions: meshbus/bus/roles.py. Why this shape: docs/security-bus.md.\n"
        f"tls: {json.dumps(tls, indent=2)}\n"
        "# nkey users (components, bootstrap) connect in plain text; certificate users over TLS.\n"
        "allow_non_tls: true\n"
        f"authorization: {{\n  users: {json.dumps(entries, indent=2)}\n}}\n"
    )


def ensure_bus(
    bus_dir: Path,
    material: CaMaterial,
    *,
    root: str,
    proxies: Iterable[ProxyPrincipal] = (),
    now: dt.datetime | None = None,
) -> BusFiles:
    """Write (or keep) every credential and the server config in ``bus_dir`` (``<data-dir>/bus``)."""
    s = Subjects(root)
    bus_dir = bus_dir.resolve()
    bus_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    bus_dir.chmod(0o700)
    # The roots client certificates are checked against (a copy: nats-server needs no CA directory)
    ca_file = bus_dir / SERVER_CA
    write_atomic(ca_file, material.root_pem, 0o644)
    files = BusFiles(bus_dir, ca_file)
    users: list[tuple[str, str, roles.Permissions]] = []
    publics: dict[str, str] = {}
    for role in roles.COMPONENTS:
        publics[role] = _ensure_nkey(files.nkey(role))
        users.append(("nkey", publics[role], roles.component(role, s)))
    publics[BOOTSTRAP] = _ensure_nkey(files.nkey(BOOTSTRAP))
    users.append(("nkey", publics[BOOTSTRAP], roles.bootstrap(s)))
    by_identity: dict[str, list[str]] = {}
    for p in proxies:
        if p.spiffe_id:
            by_identity.setdefault(p.spiffe_id, []).append(p.node)
        else:
            name = proxy_nkey_name(p.node)
            publics[name] = _ensure_nkey(files.nkey(name))
            users.append(("nkey", publics[name], roles.proxy(s, [p.node])))
    for spiffe_id, nodes in sorted(by_identity.items()):
        users.append(("user", spiffe_id, roles.proxy(s, nodes)))
    _ensure_signing_key(files)
    cert_pem, key_pem = server_certificate(material, now or dt.datetime.now(dt.UTC))
    write_atomic(bus_dir / SERVER_CERT, cert_pem, 0o644)
    _private(bus_dir / SERVER_KEY, key_pem)
    text = render_config(users, cert=bus_dir / SERVER_CERT, key=bus_dir / SERVER_KEY, ca=ca_file)
    _private(files.conf, text.encode())
    return BusFiles(bus_dir, ca_file, publics)


# -- one folder per consumer (containers) ---------------------------------------------------------

BY_ROLE_DIR = "roles"
NATS_CONSUMER, PROXY_CONSUMER = "nats", "proxy"


def consumers(files: BusFiles) -> dict[str, tuple[str, ...]]:
    """Which files each consumer needs: nats-server its config, certificate and key; a component role
    its own seed (discovery also the signing key, meshbus-ca its public half); a sidecar with a
    certificate the bootstrap seed and the server's root; a sidecar without one its own seed."""
    out: dict[str, tuple[str, ...]] = {NATS_CONSUMER: (CONF_FILE, SERVER_CERT, SERVER_KEY, SERVER_CA)}
    extra = {"discovery": (SIGNING_KEY,), "ca": (SIGNING_PUB,)}
    for role in roles.COMPONENTS:
        out[role] = (f"{role}.nk", *extra.get(role, ()))
    out[PROXY_CONSUMER] = (f"{BOOTSTRAP}.nk", SERVER_CA)
    prefix = proxy_nkey_name("")
    for name in files.public_keys:
        if name.startswith(prefix):
            out[name] = (f"{name}.nk", SERVER_CA)
    return out


def hand_out(files: BusFiles) -> Path:
    """Copy each consumer's files into ``<bus-dir>/roles/<consumer>/`` (0700, modes kept), so that a
    container mounts only its own (a compose volume ``subpath``) and a sidecar's container never holds
    the operator's key. ``roles/`` is rewritten whole: a key that left a consumer leaves its folder,
    the folder of a sidecar no longer listed goes."""
    base = files.dir / BY_ROLE_DIR
    base.mkdir(mode=0o700, exist_ok=True)
    base.chmod(0o700)
    wanted = consumers(files)
    for gone in [p for p in base.iterdir() if p.name not in wanted]:  # a sidecar no longer listed
        for f in gone.iterdir():
            f.unlink()
        gone.rmdir()
    for consumer, names in wanted.items():
        folder = base / consumer
        folder.mkdir(mode=0o700, exist_ok=True)
        folder.chmod(0o700)
        for stale in set(p.name for p in folder.iterdir()) - set(names):
            (folder / stale).unlink()
        for name in names:
            src = files.dir / name
            write_atomic(folder / name, src.read_bytes(), src.stat().st_mode & 0o777)
    return base


# -- who gets what (meshctl up's children) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Principal:
    """What a child process authenticates as: a component role, or a proxy (node, identity)."""

    role: str
    node: str = ""
    spiffe_id: str | None = None


def principal_of(
    name: str, argv: Iterable[str], identity: tuple[str, str] | None, trust_domain: str
) -> Principal | None:
    """A child by its name and argv: ``meshbus-<role>`` is that component; a ``meshbus.proxy`` child is
    a proxy (its ``--node-id``), with its SPIFFE ID when it gets an identity; anything else (an app)
    does not use the bus and gets nothing."""
    args = list(argv)
    if name.startswith("meshbus-") and name.removeprefix("meshbus-") in roles.COMPONENTS:
        return Principal(name.removeprefix("meshbus-"))
    if "meshbus.proxy" in args and "--node-id" in args:
        node = args[args.index("--node-id") + 1]
        sid = str(SpiffeId.workload(trust_domain, *identity)) if identity else None
        return Principal("proxy", node, sid)
    return None


def child_env(files: BusFiles, who: Principal | None) -> dict[str, str]:
    """The environment that gives a child its credentials (paths, never a secret in argv)."""
    if who is None:
        return {}
    if who.role != "proxy":
        env = {ENV_NKEY: str(files.nkey(who.role))}
        if who.role == "discovery":
            env[ENV_SIGNING_KEY] = str(files.signing_key)
        if who.role == "ca":
            env[ENV_SNAPSHOT_KEY] = str(files.signing_pub)
        return env
    if who.spiffe_id:
        return {ENV_CA: str(files.server_ca), ENV_BOOTSTRAP_NKEY: str(files.nkey(BOOTSTRAP))}
    return {ENV_NKEY: str(files.nkey(proxy_nkey_name(who.node)))}


OPERATOR_NKEY_HINT = f"$MESHBUS_DATA_DIR/{BUS_DIR}/operator.nk (default .meshbus)"


def operator_nkey(data_dir: str | Path) -> Path | None:
    """The operator's seed a `meshctl up` wrote in ``data_dir``, if there is one (meshctl's default)."""
    path = Path(data_dir) / BUS_DIR / "operator.nk"
    return path if path.is_file() else None


# -- meshctl up's side ----------------------------------------------------------------------------


def prepare_for_up(
    data_dir: Path,
    children: Iterable[tuple[str, Iterable[str], tuple[str, str] | None]],
    *,
    root: str,
    mtls: bool = True,
) -> BusFiles:
    """The mesh root (created if new, as meshbus-ca would), then `ensure_bus` for these children
    (name, argv, identity): every proxy among them gets a user (its identity's, or an nkey with ``mtls``
    off)."""
    from meshbus.control.ca.material import load_or_create_root, read_passphrase

    now = dt.datetime.now(dt.UTC)
    trust_domain = os.environ.get(ENV_TRUST_DOMAIN) or DEFAULT_TRUST_DOMAIN
    material, _created = load_or_create_root(data_dir / "ca", trust_domain, read_passphrase(None), now)
    proxies = []
    for name, argv, identity in children:
        who = principal_of(name, argv, identity if mtls else None, trust_domain)
        if who is not None and who.role == "proxy":
            proxies.append(ProxyPrincipal(who.node, who.spiffe_id))
    return ensure_bus(data_dir / BUS_DIR, material, root=root, proxies=proxies, now=now)


def env_for_up(
    files: BusFiles, name: str, argv: Iterable[str], identity: tuple[str, str] | None, no_mtls: bool
) -> dict[str, str]:
    trust_domain = os.environ.get(ENV_TRUST_DOMAIN) or DEFAULT_TRUST_DOMAIN
    return child_env(files, principal_of(name, argv, None if no_mtls else identity, trust_domain))


def server_args(files: BusFiles | None) -> tuple[str, ...]:
    """nats-server's arguments for this config (none: an open server)."""
    return ("-c", str(files.conf)) if files is not None else ()


def describe(files: BusFiles | None) -> str:
    if files is None:
        return " [insecure bus: no users, no permissions]"
    return f" [TLS, users and permissions: {files.conf}]"


def operator_settings(url: str, root: str, nkey: str | None) -> BusSettings:
    """meshctl up's own client (apply, tokens): the operator role."""
    return BusSettings(
        url=url,
        name="meshctl up",
        root=root,
        nkey_seed_file=nkey,
        inbox_prefix=inbox_prefix("role", "operator"),
    )
