"""meshctl plugins: the filters a Plugin can name.

    meshctl plugins [-o table|json] [--timeout S] [--local]

Installed: the ``meshbus.filters`` entry points where meshctl runs (name, package, version, hooks,
config fields; ``-o json`` has the whole JSON Schema). Remote: the ``meshbus-filter-host`` processes
live on the bus now (each answers the NATS micro INFO request). ``--local`` lists only the installed
ones; without NATS the table of installed ones is printed, then the error every command gives.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from meshbus.bus.errors import BusError
from meshbus.plugins import registry
from meshbus.plugins.api import hook_list

from .bus_call import call, timeout_args


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "plugins",
        parents=[common, timeout_args(1.0, "filter hosts to answer")],
        help="installed filters and the remote filter hosts live on the bus",
    )
    p.add_argument("-o", "--output", choices=["table", "json"], default="table")
    p.add_argument("--local", action="store_true", help="only the installed filters (no NATS)")
    p.set_defaults(func=run)


def installed_rows() -> list[dict[str, Any]]:
    rows = []
    for f in registry.installed():
        row: dict[str, Any] = {"name": f.name, "package": f.package, "version": f.version, "target": f.target}
        try:
            info = registry.load(f.name)
        except registry.PluginLoadError as exc:
            row["error"] = str(exc)
        else:
            row["hooks"] = [h.removeprefix("on_") for h in info.hooks]
            row["requestBody"] = info.request_body.mode
            row["responseBody"] = info.response_body.mode
            row["configSchema"] = info.schema
        rows.append(row)
    return rows


def host_rows(hosts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for h in hosts:
        md = h.get("metadata") or {}
        schema = md.get("config_schema") or ""
        rows.append(
            {
                "name": md.get("filter", "?"),
                "instance": h.get("id", ""),
                "package": md.get("package", ""),
                "version": md.get("version", ""),
                "language": md.get("language", ""),
                "hooks": [x for x in (md.get("hooks") or "").split(",") if x],
                "configSchema": json.loads(schema) if schema else None,
            }
        )
    return sorted(rows, key=lambda r: (r["name"], r["instance"]))


def _fields(schema: dict[str, Any] | None) -> str:
    if not schema:
        return "-"
    required = set(schema.get("required", ()))
    props = schema.get("properties", {})
    return ", ".join(f"{k}{'' if k in required else '?'}" for k in props) or "{}"


def run(args: argparse.Namespace) -> int:
    local = installed_rows()
    hosts: list[dict[str, Any]] | None = None
    unreachable: BusError | None = None
    if not args.local:
        from meshbus.control.config.filters import list_hosts

        try:
            hosts = host_rows(call(args, lambda bus: list_hosts(bus, timeout=args.timeout)))
        except BusError as exc:
            unreachable = exc  # the installed ones are still worth showing; then the error, as every command
    if args.output == "json":
        if unreachable is not None:
            raise unreachable
        print(json.dumps({"installed": local, "remote": hosts}, indent=2))
        return 0
    # Not a terminal (a pipe, a test): wide enough that names and hooks are not cut.
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    t = Table(title="Installed filters (meshbus.filters entry points)", title_justify="left")
    for col in ("NAME", "PACKAGE", "VERSION", "HOOKS", "BODY (req/resp)", "CONFIG"):
        t.add_column(col, overflow="fold")
    for r in local:
        if "error" in r:
            t.add_row(r["name"], r["package"], r["version"], f"[red]{r['error']}[/red]", "", "")
        else:
            t.add_row(
                r["name"], r["package"], r["version"], hook_list(r["hooks"]),
                f"{r['requestBody']}/{r['responseBody']}", _fields(r["configSchema"]),
            )  # fmt: skip
    console.print(t)
    if unreachable is not None:
        raise unreachable
    if hosts is None:
        return 0
    t = Table(title="Remote filter hosts live on the bus (meshbus-filter-host)", title_justify="left")
    for col in ("NAME", "INSTANCE", "PACKAGE", "VERSION", "LANGUAGE", "HOOKS", "CONFIG"):
        t.add_column(col, overflow="fold")
    for r in hosts:
        t.add_row(
            r["name"], r["instance"], r["package"], r["version"], r["language"], hook_list(r["hooks"]),
            _fields(r["configSchema"]),
        )  # fmt: skip
    console.print(t if hosts else "No remote filter hosts are live.")
    return 0
