"""meshbus-discovery: the discovery process (Pilot role).

    meshbus-discovery --nats nats://127.0.0.1:4222 [--subject-root mesh] [--expiry 3]
                      [--debounce-quiet 0.02] [--debounce-max 0.5] [--warmup 1.5] [--no-deltas]
                      [--signing-key FILE]

Run any number of replicas against one NATS: fetch/register are served in a queue group, every
replica keeps the full registry from heartbeats, and each proxy is pushed to by exactly one live
replica (rendezvous hashing). Only this module exits the process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from meshbus.bus.connection import BusConnection
from meshbus.bus.process import add_common_args, run_until_signalled, settings_from_args, use_uvloop
from meshbus.bus.signing import Signer, load_private_key
from meshbus.telemetry.logging import configure_logging

from .server import DiscoveryServer, DiscoverySettings

ENV_SIGNING_KEY = "MESHBUS_SIGNING_KEY"


def build_parser() -> argparse.ArgumentParser:
    d = DiscoverySettings()
    p = argparse.ArgumentParser(
        prog="meshbus-discovery",
        description="Workload registry and per-proxy config snapshots (xDS over NATS).",
    )
    add_common_args(p)
    p.add_argument("--replica-id", default=None, help="replica id (default: random)")
    p.add_argument(
        "--expiry", type=float, default=d.expiry, help="seconds without heartbeat before a workload leaves"
    )
    p.add_argument(
        "--debounce-quiet", type=float, default=d.debounce_quiet, help="quiet period before a push (s)"
    )
    p.add_argument(
        "--debounce-max", type=float, default=d.debounce_max, help="longest a push waits in a burst (s)"
    )
    p.add_argument("--warmup", type=float, default=d.warmup, help="seconds to hear heartbeats before pushing")
    p.add_argument("--no-deltas", action="store_true", help="always send full snapshots")
    p.add_argument("--create-config-bucket", action="store_true", help="create the config bucket if missing")
    p.add_argument("--grace", type=float, default=5.0, help="seconds to drain on shutdown")
    p.add_argument(
        "--signing-key",
        default=os.environ.get(ENV_SIGNING_KEY) or None,
        metavar="FILE",
        help=f"Ed25519 private key (PEM) that signs every snapshot (default ${ENV_SIGNING_KEY}); its public "
        "half goes to meshbus-ca (--snapshot-key), which gives it to proxies with the trust bundle",
    )
    return p


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    settings = DiscoverySettings(
        expiry=args.expiry,
        debounce_quiet=args.debounce_quiet,
        debounce_max=args.debounce_max,
        warmup=args.warmup,
        deltas=not args.no_deltas,
        create_config_bucket=args.create_config_bucket,
    )
    signer = Signer(load_private_key(args.signing_key)) if args.signing_key else None
    async with BusConnection(settings_from_args(args, "meshbus-discovery", role="discovery")) as bus:
        async with DiscoveryServer(bus, settings, replica_id=args.replica_id, signer=signer):
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.expiry <= 0 or args.debounce_quiet < 0 or args.debounce_max < args.debounce_quiet:
        print(
            "meshbus-discovery: need --expiry > 0 and 0 <= --debounce-quiet <= --debounce-max",
            file=sys.stderr,
        )
        sys.exit(2)
    configure_logging("discovery", args.log_level, args.log_format)
    if args.signing_key:
        try:
            load_private_key(args.signing_key)
        except (OSError, ValueError) as exc:
            print(f"meshbus-discovery: --signing-key: {exc}", file=sys.stderr)
            sys.exit(2)
    use_uvloop()
    asyncio.run(run_until_signalled(lambda stop: serve(args, stop), grace=args.grace))
    sys.exit(0)


if __name__ == "__main__":
    main()
