"""Credentials for a secured bus: nats-server's config and every process's certificate, 0600 under one directory.

`meshctl up` (and ``meshctl bus init`` for docker-compose) calls `ensure_bus`, which writes into
``<data-dir>/bus/`` (0700):

- ``nats-server.conf``: TLS only (no plain-text client), with a server certificate signed by the mesh
  root (``ca_file`` is that root) and ``verify_and_map``: every client presents a certificate, whose
  URI SAN names its user; one user per principal with its role's permissions (`meshbus.bus.roles`).
- ``<principal>-cert.pem`` / ``<principal>-key.pem``: the client certificate of each component role
  (operator for meshctl, config, discovery, ca, policy, telemetry, filter-host), of ``bootstrap``
  (proxies without a certificate yet: ca.certify only) and of ``proxy-<node>`` for a proxy that runs
  without a workload identity (``--no-mtls``). Their IDs, ``spiffe://<td>/meshbus/<kind>/<name>``,
  are a form meshbus-ca never issues to a workload (`meshbus.bus.spiffe.SpiffeId.is_bus_principal`).
  Proxies with an identity present their X.509-SVID instead.
- ``server-cert.pem``/``server-key.pem``: nats-server's certificate (localhost, 127.0.0.1, ``nats``);
  ``server-ca.pem``: the mesh root, which checks it and every client certificate.
- ``snapshot-signing.pem``: the key meshbus-discovery signs snapshots with; ``snapshot-signing.pub.pem``
  its public half, which meshbus-ca hands to proxies in the trust bundle.

Keys that exist are kept (a restarted mesh keeps its identities and its snapshot key); the server
config and the certificates are written anew each time. Why config-file users and not the
decentralized JWT model: see docs/security-bus.md ("Choice"). Who gets which credentials: `child_env`.
nkeys (``--nats-nkey``) stay supported by every process, for a NATS that meshbus does not configure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshbus.bus import roles
from meshbus.bus.connection import ENV_CA, ENV_CERT, ENV_KEY, ENV_NKEY, BusSettings
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
CLIENT_CERT_DAYS = 365
"""Lifetime of the bus principals' client certificates (never past the mesh root's own): written anew
at every `ensure_bus`, i.e. every `meshctl up` / `meshctl bus init`."""
SERVER_NAMES = ("localhost", "nats")
SERVER_IPS = ("127.0.0.1", "::1")

ENV_SIGNING_KEY = "MESHBUS_SIGNING_KEY"  # meshbus-discovery --signing-key
ENV_SNAPSHOT_KEY = "MESHBUS_SNAPSHOT_KEY"  # meshbus-ca --snapshot-key
ENV_BOOTSTRAP_CERT = "MESHBUS_NATS_BOOTSTRAP_CERT"  # meshbus-proxy --nats-bootstrap-cert
ENV_BOOTSTRAP_KEY = "MESHBUS_NATS_BOOTSTRAP_KEY"  # meshbus-proxy --nats-bootstrap-key
ENV_TRUST_DOMAIN = "MESHBUS_TRUST_DOMAIN"  # meshbus-ca --trust-domain


@dataclass(frozen=True, slots=True)
class ProxyPrincipal:
    node: str
    spiffe_id: str | None = None
    """Its certificate's SPIFFE ID (the NATS user it maps to); None: a client certificate of its own."""


@dataclass(frozen=True, slots=True)
class BusFiles:
    """Where `ensure_bus` put everything (paths are absolute)."""

    dir: Path
    server_ca: Path
    """The mesh root: nats-server checks client certificates with it, clients check the server with it."""
    principals: Mapping[str, str] = field(default_factory=dict)
    """principal (role, ``bootstrap``, ``proxy-<node>``) -> the URI SAN of its client certificate."""

    @property
    def conf(self) -> Path:
        return self.dir / CONF_FILE

    def cert(self, principal: str) -> Path:
        return self.dir / cert_name(principal)

    def key(self, principal: str) -> Path:
        return self.dir / key_name(principal)

    @property
    def signing_key(self) -> Path:
        return self.dir / SIGNING_KEY

    @property
    def signing_pub(self) -> Path:
        return self.dir / SIGNING_PUB


def cert_name(principal: str) -> str:
    return f"{principal}-cert.pem"


def key_name(principal: str) -> str:
    return f"{principal}-key.pem"


def proxy_principal_name(node: str) -> str:
    return f"proxy-{node}"


def principal_id(trust_domain: str, principal: str) -> str:
    """The URI SAN of a bus principal's client certificate: ``spiffe://<td>/meshbus/role/<role>``
    (``bootstrap`` included), ``spiffe://<td>/meshbus/proxy/<node>`` for a proxy without identity."""
    prefix = proxy_principal_name("")
    if principal.startswith(prefix):
        return str(SpiffeId.bus_principal(trust_domain, "proxy", principal.removeprefix(prefix)))
    return str(SpiffeId.bus_principal(trust_domain, "role", principal))


def _private(path: Path, data: bytes) -> None:
    write_atomic(path, data, 0o600)


def _ensure_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The EC key in ``path``, generating it if there is none."""
    if not path.exists():
        new = ec.generate_private_key(ec.SECP256R1())
        _private(path, _key_pem(new))
    key = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: not an EC private key (remove it: a new one is made)")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _ensure_signing_key(files: BusFiles) -> None:
    if not files.signing_key.exists():
        _private(files.signing_key, generate_key_pem())
    write_atomic(files.signing_pub, public_key_pem(load_private_key(files.signing_key)), 0o644)


def _leaf(
    material: CaMaterial,
    key: ec.EllipticCurvePrivateKey,
    *,
    subject: x509.Name,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: dt.datetime,
    days: int,
) -> bytes:
    """A leaf certificate the mesh CA signs over ``key``, with its chain (PEM)."""
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(material.signing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(min(now + dt.timedelta(days=days), material.signing_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # an empty subject makes the SAN critical (RFC 5280 4.2.1.6)
        .add_extension(x509.SubjectAlternativeName(sans), critical=not subject)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(material.signing_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM) + material.chain_pem


def server_certificate(material: CaMaterial, now: dt.datetime, days: int = 365) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) for nats-server, signed by the mesh CA: a plain TLS server certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshbus nats-server")])
    chain = _leaf(
        material, key, subject=name, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH, now=now, days=days
    )
    return chain, _key_pem(key)


def client_certificate(
    material: CaMaterial,
    key: ec.EllipticCurvePrivateKey,
    uri: str,
    now: dt.datetime,
    days: int = CLIENT_CERT_DAYS,
) -> bytes:
    """A bus principal's client certificate (PEM chain): its only name is the URI SAN ``uri``, which
    nats-server's ``verify_and_map`` maps to the user of that name."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    return _leaf(
        material,
        key,
        subject=x509.Name([]),
        sans=sans,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        now=now,
        days=days,
    )


def _ensure_client(
    files: BusFiles, principal: str, material: CaMaterial, trust_domain: str, now: dt.datetime
) -> str:
    """Keep (or make) ``principal``'s key, certify it anew; its URI SAN."""
    uri = principal_id(trust_domain, principal)
    key = _ensure_key(files.key(principal))
    _private(files.cert(principal), client_certificate(material, key, uri, now))
    return uri


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


def render_config(users: Iterable[tuple[str, roles.Permissions]], *, cert: Path, key: Path, ca: Path) -> str:
    """nats-server's config text; ``users``: (the URI SAN a client certificate maps to, permissions).

    Every client connects over TLS and presents a certificate the mesh root signed (``verify_and_map``);
    a plain-text client is refused (no ``allow_non_tls``). The values are JSON, which the NATS config
    format accepts as is (strings quoted, so a SPIFFE ID's ``://`` is never read as a comment)."""
    entries = [{"user": name, "permissions": _permissions(perms)} for name, perms in users]
    tls = {"cert_file": str(cert), "key_file": str(key), "ca_file": str(ca), "verify_and_map": True}
    return (
        "# Written by meshctl (meshbus.control.cli.bus_auth) at every `meshctl up`: edits are lost.\n"
        "# Users and permissions: meshbus/bus/roles.py. Why this shape: docs/security-bus.md.\n"
        "# TLS only: every client presents a certificate whose URI SAN names its user.\n"
        f"tls: {json.dumps(tls, indent=2)}\n"
        f"authorization: {{\n  users: {json.dumps(entries, indent=2)}\n}}\n"
    )


def ensure_bus(
    bus_dir: Path,
    material: CaMaterial,
    *,
    root: str,
    proxies: Iterable[ProxyPrincipal] = (),
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    now: dt.datetime | None = None,
) -> BusFiles:
    """Write (or keep) every credential and the server config in ``bus_dir`` (``<data-dir>/bus``)."""
    s = Subjects(root)
    now = now or dt.datetime.now(dt.UTC)
    bus_dir = bus_dir.resolve()
    bus_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    bus_dir.chmod(0o700)
    # The roots client certificates are checked against (a copy: nats-server needs no CA directory)
    ca_file = bus_dir / SERVER_CA
    write_atomic(ca_file, material.root_pem, 0o644)
    files = BusFiles(bus_dir, ca_file)
    wanted: list[tuple[str, roles.Permissions]] = [(r, roles.component(r, s)) for r in roles.COMPONENTS]
    wanted.append((BOOTSTRAP, roles.bootstrap(s)))
    by_identity: dict[str, list[str]] = {}
    for p in proxies:
        if p.spiffe_id:
            by_identity.setdefault(p.spiffe_id, []).append(p.node)
        else:
            wanted.append((proxy_principal_name(p.node), roles.proxy(s, [p.node])))
    principals: dict[str, str] = {}
    users: list[tuple[str, roles.Permissions]] = []
    for name, perms in wanted:
        principals[name] = _ensure_client(files, name, material, trust_domain, now)
        users.append((principals[name], perms))
    for spiffe_id, nodes in sorted(by_identity.items()):
        users.append((spiffe_id, roles.proxy(s, nodes)))
    for stale in bus_dir.glob("*.nk"):  # an older meshbus's nkey seeds: no user has them any more
        stale.unlink()
    _ensure_signing_key(files)
    cert_pem, key_pem = server_certificate(material, now)
    write_atomic(bus_dir / SERVER_CERT, cert_pem, 0o644)
    _private(bus_dir / SERVER_KEY, key_pem)
    text = render_config(users, cert=bus_dir / SERVER_CERT, key=bus_dir / SERVER_KEY, ca=ca_file)
    _private(files.conf, text.encode())
    return BusFiles(bus_dir, ca_file, principals)


# -- one folder per consumer (containers) ---------------------------------------------------------

BY_ROLE_DIR = "roles"
NATS_CONSUMER, PROXY_CONSUMER = "nats", "proxy"


def _client_files(principal: str) -> tuple[str, str, str]:
    return cert_name(principal), key_name(principal), SERVER_CA


def consumers(files: BusFiles) -> dict[str, tuple[str, ...]]:
    """Which files each consumer needs: nats-server its config, certificate and key; a component role
    its own client certificate and key and the root (discovery also the signing key, meshbus-ca its
    public half); a sidecar with a workload identity the bootstrap certificate and key and the root; a
    sidecar without one its own."""
    out: dict[str, tuple[str, ...]] = {NATS_CONSUMER: (CONF_FILE, SERVER_CERT, SERVER_KEY, SERVER_CA)}
    extra = {"discovery": (SIGNING_KEY,), "ca": (SIGNING_PUB,)}
    for role in roles.COMPONENTS:
        out[role] = (*_client_files(role), *extra.get(role, ()))
    out[PROXY_CONSUMER] = _client_files(BOOTSTRAP)
    prefix = proxy_principal_name("")
    for name in files.principals:
        if name.startswith(prefix):
            out[name] = _client_files(name)
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
        shutil.rmtree(gone)
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


def client_env(files: BusFiles, principal: str) -> dict[str, str]:
    """``principal``'s client certificate, key and the root, as the environment hands them over."""
    return {
        ENV_CERT: str(files.cert(principal)),
        ENV_KEY: str(files.key(principal)),
        ENV_CA: str(files.server_ca),
    }


def child_env(files: BusFiles, who: Principal | None) -> dict[str, str]:
    """The environment that gives a child its credentials (paths, never a secret in argv)."""
    if who is None:
        return {}
    if who.role != "proxy":
        env = {**client_env(files, who.role), ENV_NKEY: ""}
        if who.role == "discovery":
            env[ENV_SIGNING_KEY] = str(files.signing_key)
        if who.role == "ca":
            env[ENV_SNAPSHOT_KEY] = str(files.signing_pub)
        return env
    if who.spiffe_id:  # its SVID once it has one; the bootstrap certificate to get it
        return {
            ENV_CERT: "",  # none of meshctl's own (it would stand for the SVID)
            ENV_KEY: "",
            ENV_NKEY: "",
            ENV_CA: str(files.server_ca),
            ENV_BOOTSTRAP_CERT: str(files.cert(BOOTSTRAP)),
            ENV_BOOTSTRAP_KEY: str(files.key(BOOTSTRAP)),
        }
    return {**client_env(files, proxy_principal_name(who.node)), ENV_NKEY: ""}


OPERATOR_CERT_HINT = f"$MESHBUS_DATA_DIR/{BUS_DIR}/{cert_name('operator')} (default .meshbus)"


def operator_credentials(data_dir: str | Path) -> tuple[str, str, str] | None:
    """(cert, key, root) of the operator that a `meshctl up` wrote in ``data_dir``, if there are (meshctl's
    default)."""
    files = BusFiles(Path(data_dir) / BUS_DIR, Path(data_dir) / BUS_DIR / SERVER_CA)
    found = (files.cert("operator"), files.key("operator"), files.server_ca)
    return (str(found[0]), str(found[1]), str(found[2])) if all(p.is_file() for p in found) else None


# -- meshctl up's side ----------------------------------------------------------------------------


def prepare_for_up(
    data_dir: Path,
    children: Iterable[tuple[str, Iterable[str], tuple[str, str] | None]],
    *,
    root: str,
    mtls: bool = True,
) -> BusFiles:
    """The mesh root (created if new, as meshbus-ca would), then `ensure_bus` for these children
    (name, argv, identity): every proxy among them gets a user (its identity's, or a client certificate
    of its own with ``mtls`` off)."""
    from meshbus.control.ca.material import load_or_create_root, read_passphrase

    now = dt.datetime.now(dt.UTC)
    trust_domain = os.environ.get(ENV_TRUST_DOMAIN) or DEFAULT_TRUST_DOMAIN
    material, _created = load_or_create_root(data_dir / "ca", trust_domain, read_passphrase(None), now)
    proxies = []
    for name, argv, identity in children:
        who = principal_of(name, argv, identity if mtls else None, trust_domain)
        if who is not None and who.role == "proxy":
            proxies.append(ProxyPrincipal(who.node, who.spiffe_id))
    return ensure_bus(
        data_dir / BUS_DIR, material, root=root, proxies=proxies, trust_domain=trust_domain, now=now
    )


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


def client_settings(files: BusFiles | None, principal: str, settings: BusSettings) -> BusSettings:
    """``settings`` with ``principal``'s client certificate (unchanged on an insecure bus)."""
    if files is None:
        return settings
    return dataclasses.replace(
        settings,
        tls_cert=str(files.cert(principal)),
        tls_key=str(files.key(principal)),
        tls_ca=str(files.server_ca),
        nkey_seed_file=None,
    )


def operator_settings(url: str, root: str, files: BusFiles | None) -> BusSettings:
    """meshctl up's own client (apply, tokens): the operator role."""
    plain = BusSettings(url=url, name="meshctl up", root=root, inbox_prefix=inbox_prefix("role", "operator"))
    return client_settings(files, "operator", plain)
