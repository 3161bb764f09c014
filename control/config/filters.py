"""What meshbus-config knows of filters when a Plugin is applied (bus/config/validation/plugin.py).

``FilterCatalog``: the filters installed where meshbus-config runs (the ``meshbus.filters`` entry
points: their Config checks pluginConfig) and the remote filters whose hosts answered on the bus
(their published JSON Schema checks it). ``remote_filters`` asks the hosts, all at once, within a
short timeout; ``list_hosts`` gathers every live host (``meshctl plugins``) through the NATS micro
protocol's INFO subject, which every host answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nats.aio.msg import Msg

from meshbus.bus.config.resources import Plugin, Resource
from meshbus.bus.config.result import Validation
from meshbus.bus.config.validation.findings import Findings
from meshbus.bus.config.validation.plugin import Problem, check_filter
from meshbus.bus.connection import BusConnection
from meshbus.bus.errors import BusError
from meshbus.bus.rpc import request
from meshbus.bus.schemas.filters import MICRO_SERVICE, FilterHostInfo, FilterInfoRequest
from meshbus.bus.subjects import micro
from meshbus.plugins import registry
from meshbus.plugins.loader import config_problems, schema_problems

REMOTE_TIMEOUT = 0.5
"""How long an apply waits for a remote filter's host to describe it."""


class FilterCatalog:
    def __init__(self, remote: Mapping[str, FilterHostInfo] | None = None) -> None:
        self._installed = set(registry.names())
        self._remote = dict(remote or {})

    def installed(self, name: str) -> bool:
        return name in self._installed

    def installed_names(self) -> Sequence[str]:
        return sorted(self._installed)

    def remote(self, name: str) -> bool:
        return name in self._remote

    def problems(self, name: str, placement: str, config: Mapping[str, Any] | None) -> list[Problem]:
        if placement == "REMOTE":
            schema = self._remote[name].config_schema
            if not schema:
                return [((), f"filter {name!r} takes no config", None)] if config else []
            return list(schema_problems(json.loads(schema), config))
        try:
            info = registry.load(name)
        except registry.PluginLoadError as exc:
            return [((), str(exc).removeprefix("meshbus: "), None)]
        return list(config_problems(info, config))


async def remote_filters(bus: BusConnection, names: Iterable[str]) -> dict[str, FilterHostInfo]:
    """Descriptions of the named remote filters whose hosts answer within REMOTE_TIMEOUT."""

    async def ask(name: str) -> tuple[str, FilterHostInfo | None]:
        try:
            info = await request(
                bus,
                bus.subjects.filter_info(name),
                FilterInfoRequest(),
                FilterHostInfo,
                timeout=REMOTE_TIMEOUT,
            )
        except BusError:
            return name, None
        return name, info

    answers = await asyncio.gather(*(ask(n) for n in sorted(set(names))))
    return {n: i for n, i in answers if i is not None}


async def check_plugins(bus: BusConnection | None, resources: Iterable[Resource]) -> Validation:
    """Every Plugin's filter and pluginConfig, against installed filters and live hosts."""
    plugins = [r for r in resources if isinstance(r, Plugin)]
    out = Validation()
    if not plugins:
        return out
    wanted = [p.spec.filter for p in plugins if p.spec.placement == "REMOTE"]
    remote = await remote_filters(bus, wanted) if bus is not None and wanted else {}
    catalog = FilterCatalog(remote)
    for p in plugins:
        check_filter(p, catalog, Findings(p, out))
    return out


async def list_hosts(bus: BusConnection, *, timeout: float = 1.0) -> list[dict[str, Any]]:
    """Every live filter host's micro INFO (name, id, version, metadata), gathered for ``timeout``."""
    out: list[dict[str, Any]] = []

    async def on_reply(msg: Msg) -> None:
        with contextlib.suppress(ValueError):
            out.append(json.loads(msg.data))

    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox, cb=on_reply)
    try:
        await bus.nc.publish(micro("INFO", MICRO_SERVICE), b"", reply=inbox)
        await asyncio.sleep(timeout)  # scatter/gather: nobody says how many hosts will answer
    finally:
        await sub.unsubscribe()
    return [h for h in out if (h.get("metadata") or {}).get("root", bus.subjects.root) == bus.subjects.root]


__all__ = ["FilterCatalog", "check_plugins", "list_hosts", "remote_filters"]
