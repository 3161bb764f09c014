"""meshbus-config: the config store process (Galley role).

    meshbus-config --nats nats://127.0.0.1:4222 [--subject-root mesh] [--history 64]

Any number of replicas may run against one NATS; they share the work through a queue group and
all state is in the JetStream KV bucket. Only this module exits the process.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from meshbus.bus.connection import BusConnection
from meshbus.bus.process import add_common_args, run_until_signalled, settings_from_args, use_uvloop
from meshbus.telemetry.logging import configure_logging

from .service import ConfigService
from .store import HISTORY


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshbus-config", description="Validate and store mesh config (Istio YAML) in JetStream KV."
    )
    add_common_args(parser)
    parser.add_argument(
        "--history",
        type=int,
        default=HISTORY,
        help="revisions kept per resource (1-64, bucket creation only)",
    )
    parser.add_argument("--grace", type=float, default=10.0, help="seconds to drain on shutdown")
    return parser


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    async with BusConnection(settings_from_args(args, "meshbus-config", role="config")) as bus:
        async with ConfigService(bus, history=args.history):
            await stop.wait()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not 1 <= args.history <= 64:
        print("meshbus-config: --history must be between 1 and 64", file=sys.stderr)
        sys.exit(2)
    configure_logging("config", args.log_level, args.log_format)
    use_uvloop()
    asyncio.run(run_until_signalled(lambda stop: serve(args, stop), grace=args.grace))
    sys.exit(0)


if __name__ == "__main__":
    main()
