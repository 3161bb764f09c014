"""meshctl — the operator CLI (istioctl's role).

One module per command group; each registers its subcommands with `register(sub)`.
Only this module exits the process.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from meshbus.bus.errors import BusError
from meshbus.bus.process import add_common_args

from . import version

# The command groups, in `meshctl --help`'s order, with the commands each registers. A command's
# run imports only its own group: the groups' imports (config models, nats, cryptography, rich)
# took 1.4 s of a 1.6 s start-up when every run imported all of them.
GROUPS: dict[str, tuple[str, ...]] = {
    "up": ("up",),
    "up_background": ("ps", "down"),
    "config_cmds": ("apply", "delete", "get", "history", "rollback"),
    "analyze": ("analyze",),
    "ca_cmds": ("token", "ca", "cert"),
    "bus_cmds": ("bus",),
    "status_cmds": ("proxy-status", "proxy-config"),
    "plugins_cmd": ("plugins",),
    "authz_cmds": ("authz",),
    "telemetry_cmds": ("logs", "top"),
    "version": ("version",),
}
GROUP_OF = {command: group for group, commands in GROUPS.items() for command in commands}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``command`` (a known one) of that command's group only:
    enough to parse its arguments, and the help and errors of anything else need them all."""
    parser = argparse.ArgumentParser(prog="meshctl", description="Operate a meshbus service mesh.")
    parser.add_argument("--version", action="version", version=version.text())
    common = argparse.ArgumentParser(add_help=False)
    add_common_args(common)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups = [GROUP_OF[command]] if command in GROUP_OF else list(GROUPS)
    for group in groups:
        importlib.import_module(f"{__package__}.{group}").register(sub, common)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    # meshctl's own options take no value, so the first word that is not an option is the command
    parser = build_parser(next((word for word in argv if not word.startswith("-")), None))
    args = parser.parse_args(argv)
    args.argv = argv  # `up --detach` starts itself again with them
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
