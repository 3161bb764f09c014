"""How a mesh-mode proxy authenticates to a secured bus (`meshbus.bus.roles`; `meshctl up`'s default).

Every connection is TLS, and every one presents a certificate (nats-server ``tls { verify_and_map:
true }`` maps its URI SAN to a NATS user):

- With a workload certificate (kept in the state directory, or just obtained): its SVID, whose SPIFFE
  ID is the NATS user of that identity, whose permissions are the per-node subjects of the proxies
  running with it. The TLS context is reloaded in place at every renewal, so the next reconnect
  presents the new certificate (nats-py keeps the context object).
- Without one: a bootstrap connection presenting the shared bootstrap certificate (its user may
  publish only ``ca.certify``) gets the first certificate with the single-use bootstrap token, keeps
  it in the state directory with the snapshot keys, and closes. Everything else waits for the
  certificate. (``--nats-bootstrap-nkey`` instead: for a NATS that meshbus does not configure.)

Secured mode needs ``--nats-ca`` (the CA that signed nats-server's certificate: the mesh root with
`meshctl up`) and ``--state-dir``; ``--nats-bootstrap-cert``/``--nats-bootstrap-key`` only when no
valid certificate is kept. A proxy given ``--nats-cert`` (one without workload identity) presents
that certificate instead: no secured mode then (`bus_auth_from_args` says None).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from meshbus.bus.connection import BusConnection, BusSettings
from meshbus.bus.errors import PermissionDeniedError
from meshbus.bus.subjects import inbox_prefix
from meshbus.proxy.mesh.agent_args import ENV_BOOTSTRAP_CERT, ENV_BOOTSTRAP_KEY
from meshbus.proxy.mesh.identity import CertClient, CertClientConfig, Identity
from meshbus.proxy.mesh.snapshot_trust import SnapshotTrust
from meshbus.proxy.mesh.state_dir import IDENTITY_FILE, load_identity

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BusAuth:
    server_ca: str
    """PEM file of the CA nats-server's certificate is checked against."""
    state_dir: str
    """Where the certificate is kept (the TLS context loads it from there)."""
    bootstrap_cert: str | None = None
    """Client certificate and key of the bootstrap user (needed only while no valid certificate is kept)."""
    bootstrap_key: str | None = None
    bootstrap_nkey: str | None = None
    """Or its nkey seed file (a NATS meshbus does not configure)."""


def bus_auth_from_args(args: argparse.Namespace) -> BusAuth | None:
    if not args.nats_ca or getattr(args, "nats_cert", None):
        return None  # no TLS, or a client certificate of its own (`settings_from_args` uses it)
    if not args.state_dir:
        raise PermissionDeniedError(
            "--nats-ca needs --state-dir (the certificate presented to NATS is kept there)"
        )
    return BusAuth(
        args.nats_ca,
        args.state_dir,
        args.nats_bootstrap_cert,
        args.nats_bootstrap_key,
        args.nats_bootstrap_nkey,
    )


def client_context(auth: BusAuth) -> ssl.SSLContext:
    """A TLS client context for NATS with the kept certificate (the key and chain are one file)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=auth.server_ca)
    ctx.load_cert_chain(str(Path(auth.state_dir) / IDENTITY_FILE))
    return ctx


def reload_on_rotation(auth: BusAuth, ctx: ssl.SSLContext) -> Callable[[Identity], None]:
    """A rotation callback: the next reconnect presents the renewed certificate (kept before callbacks run)."""

    def reload(_ident: Identity) -> None:
        ctx.load_cert_chain(str(Path(auth.state_dir) / IDENTITY_FILE))

    return reload


def secured_settings(settings: BusSettings, ctx: ssl.SSLContext) -> BusSettings:
    """The proxy's own connection: its certificate over TLS, no password, no nkey."""
    return dataclasses.replace(settings, ssl_context=ctx, nkey_seed_file=None, user=None)


def has_valid_certificate(auth: BusAuth, config: CertClientConfig, now: float | None = None) -> bool:
    kept = load_identity(auth.state_dir)
    return kept is not None and kept.spiffe_id == config.spiffe_id and kept.not_after > (now or time.time())


async def ensure_certificate(
    settings: BusSettings, auth: BusAuth, config: CertClientConfig, trust: SnapshotTrust
) -> None:
    """Return once a valid certificate is kept in the state directory, getting one over a bootstrap
    connection if needed (retrying while NATS or the CA are away). Raises the CA's refusal."""
    if has_valid_certificate(auth, config):
        return
    if not (auth.bootstrap_cert or auth.bootstrap_nkey):
        raise PermissionDeniedError(
            f"no valid certificate in {auth.state_dir} and no bootstrap NATS credentials "
            f"(--nats-bootstrap-cert/--nats-bootstrap-key, ${ENV_BOOTSTRAP_CERT}/${ENV_BOOTSTRAP_KEY}) to ask "
            "meshbus-ca for one"
        )
    boot = BusConnection(
        dataclasses.replace(
            settings,
            name=f"{settings.name} (bootstrap)",
            tls_cert=auth.bootstrap_cert,
            tls_key=auth.bootstrap_key,
            tls_ca=auth.server_ca,
            nkey_seed_file=None if auth.bootstrap_cert else auth.bootstrap_nkey,
            inbox_prefix=inbox_prefix("bootstrap", config.node),
            ssl_context=None,
            user=None,
        )
    )
    await boot.connect(wait=True)
    try:
        client = CertClient(boot, dataclasses.replace(config, state_dir=auth.state_dir))
        await client.start()
        await client.stop()
        trust.set_keys(client.snapshot_keys)
        log.info("first certificate obtained over the bootstrap connection")
    finally:
        await boot.close()
