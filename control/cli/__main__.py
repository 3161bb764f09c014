"""meshctl — the operator CLI (istioctl's role).

One module per command group; each registers its subcommands with `register(sub)`.
Only this module exits the process.
"""

from __future__ import annotations

import argparse
import logging
import sys

from meshbus.bus.errors import BusError
from meshbus.bus.process import add_common_args

from . import (
    analyze,
    authz_cmds,
    bus_cmds,
    ca_cmds,
    config_cmds,
    plugins_cmd,
    status_cmds,
    telemetry_cmds,
    up,
    up_background,
    version,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshctl", description="Operate a meshbus service mesh.")
    parser.add_argument("--version", action="version", version=version.text())
    common = argparse.ArgumentParser(add_help=False)
    add_common_args(common)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = (
        up, up_background, config_cmds, analyze, ca_cmds, bus_cmds, status_cmds, plugins_cmd, authz_cmds,
        telemetry_cmds, version,
    )  # fmt: skip
    for group in groups:
        group.register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `up --detach` starts itself again with them
    logging.basicConfig(
        level=logging.DEBUG if args.log_level in ("trace", "debug") else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.func(args)
    except BusError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
