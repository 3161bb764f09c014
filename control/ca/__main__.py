"""meshbus-ca: the mesh certificate authority process.

    meshbus-ca [--nats URL] [--trust-domain cluster.local] [--ca-dir DIR]
               [--ca-cert F --ca-key F [--ca-chain F]] [--ca-passphrase-file F]
               [--workload-cert-ttl 24h] [--max-workload-cert-ttl 90d] [--root-overlap 48h]
               [--trust-root F ...] [--snapshot-key F ...]

Without ``--ca-cert`` the root lives in ``--ca-dir`` (generated on first start). Run as
many replicas as you like against the same material and NATS.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import sys
from pathlib import Path

from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError
from meshbus.bus.process import add_common_args, run_until_signalled, settings_from_args, use_uvloop
from meshbus.bus.signing import load_public_key_text
from meshbus.bus.spiffe import (
    DEFAULT_TRUST_DOMAIN,
    InvalidSpiffeIdError,
    load_pem_chain,
    validate_trust_domain,
)
from meshbus.telemetry.logging import configure_logging

from .durations import parse_duration
from .errors import CaConfigError
from .issuer import CaMaterial, Issuer, IssuerConfig
from .material import load_operator_material, load_or_create_root, read_passphrase
from .service import CaService, CaServiceConfig

log = logging.getLogger("meshbus.control.ca")

ENV_CA_DIR = "MESHBUS_CA_DIR"
ENV_TRUST_DOMAIN = "MESHBUS_TRUST_DOMAIN"
ENV_SNAPSHOT_KEY = "MESHBUS_SNAPSHOT_KEY"
ENV_WORKLOAD_TTL = "MESHBUS_WORKLOAD_CERT_TTL"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshbus-ca", description="meshbus certificate authority (SPIFFE X.509-SVIDs)"
    )
    add_common_args(p)
    p.add_argument("--trust-domain", default=os.environ.get(ENV_TRUST_DOMAIN, DEFAULT_TRUST_DOMAIN))
    p.add_argument(
        "--ca-dir",
        default=os.environ.get(ENV_CA_DIR, ".meshbus/ca"),
        help=f"where the self-signed root is kept (generated on first start; default ${ENV_CA_DIR} or .meshbus/ca)",
    )
    p.add_argument("--ca-cert", help="operator-supplied signing (intermediate) CA certificate, PEM")
    p.add_argument("--ca-key", help="its private key, PEM (0600)")
    p.add_argument("--ca-chain", help="intermediates up to and including the company root, PEM")
    p.add_argument(
        "--ca-passphrase-file",
        help="passphrase of the CA key (else $MESHBUS_CA_PASSPHRASE); encrypts a new root",
    )
    p.add_argument(
        "--workload-cert-ttl",
        default=os.environ.get(ENV_WORKLOAD_TTL, "24h"),
        help=f"default SVID lifetime (default ${ENV_WORKLOAD_TTL} or 24h)",
    )
    p.add_argument("--max-workload-cert-ttl", default="90d", help="longest SVID lifetime a proxy may ask for")
    p.add_argument(
        "--root-overlap", default="48h", help="how long a replaced root stays trusted (default 48h)"
    )
    p.add_argument(
        "--snapshot-key",
        action="append",
        default=[os.environ[ENV_SNAPSHOT_KEY]] if os.environ.get(ENV_SNAPSHOT_KEY) else [],
        metavar="FILE",
        help="public key (PEM) meshbus-discovery signs snapshots with, given to proxies in the trust "
        f"bundle (repeatable: old and new during a rotation; also ${ENV_SNAPSHOT_KEY})",
    )
    p.add_argument(
        "--trust-root",
        action="append",
        default=[],
        metavar="FILE",
        help="extra root(s) to trust (repeatable)",
    )
    return p


def load_material(args: argparse.Namespace, now: dt.datetime) -> CaMaterial:
    passphrase = read_passphrase(args.ca_passphrase_file)
    if args.ca_cert or args.ca_key:
        if not (args.ca_cert and args.ca_key):
            raise CaConfigError("--ca-cert and --ca-key go together")
        return load_operator_material(args.ca_cert, args.ca_key, args.ca_chain, passphrase)
    material, _created = load_or_create_root(Path(args.ca_dir), args.trust_domain, passphrase, now)
    return material


def build(args: argparse.Namespace) -> tuple[Issuer, CaServiceConfig]:
    try:
        validate_trust_domain(args.trust_domain)
    except InvalidSpiffeIdError as exc:
        raise CaConfigError(str(exc)) from None
    try:
        ttl = dt.timedelta(seconds=parse_duration(args.workload_cert_ttl))
        max_ttl = dt.timedelta(seconds=parse_duration(args.max_workload_cert_ttl))
        overlap = dt.timedelta(seconds=parse_duration(args.root_overlap))
    except ValueError as exc:
        raise CaConfigError(str(exc)) from None
    if ttl > max_ttl:
        raise CaConfigError(f"--workload-cert-ttl {args.workload_cert_ttl} exceeds --max-workload-cert-ttl")
    extra = []
    for path in args.trust_root:
        try:
            extra.extend(load_pem_chain(Path(path).read_bytes()))
        except (OSError, ValueError) as exc:
            raise CaConfigError(f"cannot load --trust-root {path}: {exc}") from None
    keys = []
    for path in args.snapshot_key:
        try:
            keys.append(load_public_key_text(path))
        except (OSError, ValueError) as exc:
            raise CaConfigError(f"cannot load --snapshot-key {path}: {exc}") from None
    material = load_material(args, dt.datetime.now(dt.UTC))
    issuer = Issuer(
        material, IssuerConfig(trust_domain=args.trust_domain, workload_ttl=ttl, max_workload_ttl=max_ttl)
    )
    return issuer, CaServiceConfig(root_overlap=overlap, extra_roots=tuple(extra), snapshot_keys=tuple(keys))


async def serve(
    args: argparse.Namespace, issuer: Issuer, config: CaServiceConfig, stop: asyncio.Event
) -> None:
    async with (
        BusConnection(settings_from_args(args, "meshbus-ca", role="ca")) as bus,
        CaService(bus, issuer, config) as ca,
    ):
        log.info(
            "meshbus-ca serving trust domain %s (signing cert %s, %d trusted root(s))",
            issuer.config.trust_domain,
            issuer.material.signing_cert.subject.rfc4514_string(),
            len(ca.bundle.roots),
        )
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging("ca", args.log_level, args.log_format)
    try:
        issuer, config = build(args)
    except BusError as exc:
        print(f"meshbus-ca: {exc}", file=sys.stderr)
        sys.exit(2)
    use_uvloop()
    try:
        asyncio.run(run_until_signalled(lambda stop: serve(args, issuer, config, stop)))
    except BusError as exc:
        print(f"meshbus-ca: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
