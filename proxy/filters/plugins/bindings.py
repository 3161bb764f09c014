"""Plugin resources -> the filters of one proxy worker, with the instances' lifecycle.

``PluginRuntime`` (one per worker, owned by the ProxyServer) turns the Plugins of a config into a
``PluginSet`` when a runtime is built (proxy/build/runtime.py calls ``resolve``): it keeps those that
select this workload (its namespace or the root namespace — MeshConfig's ``rootNamespace`` — and
every selector label), makes one filter instance per Plugin (IN_PROCESS: loaded from the
``meshbus.filters`` entry points, config validated; REMOTE: a client of the filter's hosts), and
reuses the binding of a Plugin whose content did not change, so its instance lives on. A set equal
to the last one is the very same object: the build then reuses every compiled route.

A REMOTE Plugin's filter takes only the hook points its filter implements, which its host says
(``info``): ``prepare`` asks the hosts of the REMOTE Plugins a build will select, before the build
(within ``PREPARE_TIMEOUT``). A Plugin bound before any host answered takes every hook point; when a
host answers later, ``on_stale`` is called (the server rebuilds) and the next ``resolve`` binds it
again with its own.

``activate`` is called when a runtime goes live: instances no longer used are closed after
``close_grace`` seconds (requests in flight on the old runtime may still call them). A Plugin that
cannot be loaded is a build error naming it and the field (``RuntimeBuildError``): a standalone
proxy refuses the file, a mesh-mode proxy NACKs the snapshot and keeps its last good one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from meshbus.bus.config.meshbus_kinds import DEFAULT_ROOT_NAMESPACE, plugin_selects
from meshbus.bus.config.proxy_kinds import MeshConfig, Plugin, Resource
from meshbus.proxy.build.errors import RuntimeBuildError, build_error
from meshbus.proxy.filters import chain as C

if TYPE_CHECKING:
    from meshbus.plugins.http import Peer
    from meshbus.plugins.registry import FilterInfo
    from meshbus.proxy.filters.plugins.adapter import Backend, PluginFilter
    from meshbus.proxy.filters.plugins.remote import RemoteFilters

log = logging.getLogger(__name__)


def load(name: str) -> FilterInfo:
    """The installed filter ``name`` (:func:`meshbus.plugins.registry.load`). The registry is imported
    on the first LOCAL Plugin: it reads entry points with importlib.metadata, which imports the email
    package, ~1.3 MB of RSS in every worker that has no Plugin."""
    from meshbus.plugins.registry import load as load_installed

    return load_installed(name)


PREPARE_TIMEOUT: Final = 0.5
"""How long a build waits for REMOTE filters' descriptions (the bus connection included)."""

PHASES: Final = {"AUTHN": C.AUTHN, "AUTHZ": C.AUTHZ, "STATS": C.STATS}
"""Plugin phase -> chain sort key; UNSPECIFIED (and Istio's UNSPECIFIED_PHASE) is just before the router."""


class Binding:
    """One Plugin bound in this worker: its backend and the chain filters for each direction."""

    def __init__(self, resource: Plugin, backend: Backend, inbound: PluginFilter, outbound: PluginFilter):
        self.resource = resource
        self.backend = backend
        self.inbound = inbound
        self.outbound = outbound

    @property
    def ref(self) -> str:
        return f"{self.resource.namespace}/{self.resource.name}"

    def close(self) -> None:
        try:
            self.backend.close()
        except Exception:
            log.exception("plugin %s: close() failed", self.ref)


class PluginSet:
    """The Plugins one runtime runs; ``filters`` answers the route builders."""

    def __init__(self, bindings: Sequence[Binding] = ()) -> None:
        self.bindings = tuple(bindings)
        self._cache: dict[tuple[str, int | None], dict[str, C.HttpFilter]] = {}

    def __bool__(self) -> bool:
        return bool(self.bindings)

    def filters(self, direction: str, port: int | None) -> Mapping[str, C.HttpFilter]:
        """name -> filter of every Plugin that runs on ``direction`` (inbound/outbound) for ``port``."""
        key = (direction, port)
        hit = self._cache.get(key)
        if hit is None:
            hit = self._cache[key] = {
                f.name: f
                for b in self.bindings
                if b.resource.spec.applies(direction, port)
                for f in (b.inbound if direction == "inbound" else b.outbound,)
            }
        return hit

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "plugin": b.ref,
                "filter": b.resource.spec.filter,
                "placement": b.resource.spec.placement,
                "phase": b.resource.spec.phase,
                "priority": b.resource.spec.priority,
                "failStrategy": b.resource.spec.fail_strategy,
            }
            for b in self.bindings
        ]


EMPTY_PLUGINS: Final = PluginSet()


class PluginRuntime:
    """The Plugins of one proxy worker (see the module doc). ``registry``: the worker's metrics
    registry (None: nothing recorded); ``bus``: returns the worker's bus connection, for REMOTE ones
    (None when the proxy has none)."""

    def __init__(
        self,
        *,
        registry: Any = None,
        bus: Callable[[], Any] | None = None,
        close_grace: float = 5.0,
        loader: Callable[[str], FilterInfo] | None = None,
    ) -> None:
        self._bus = bus or (lambda: None)
        self._remotes: RemoteFilters | None = None
        self.on_stale: Callable[[], None] | None = None
        """Called when a host describes a filter that live bindings took every hook point for."""
        self.close_grace = close_grace
        self._loader = loader
        self._live: dict[tuple[str, str], Binding] = {}
        self._active: PluginSet = EMPTY_PLUGINS
        self._last: PluginSet = EMPTY_PLUGINS
        self._metrics: tuple[Any, ...] | None = None
        if registry is not None:
            self._metrics = (
                registry.counter(
                    "meshbus_plugin_calls_total", "Plugin filter hook calls", ("plugin", "hook")
                ),
                registry.counter(
                    "meshbus_plugin_errors_total",
                    "Plugin filter failures (reason: error, timeout, unreachable) and what the proxy did",
                    ("plugin", "reason", "action"),
                ),
                registry.histogram(
                    "meshbus_plugin_duration_milliseconds",
                    "Time in plugin filter hooks (remote: the round trip)",
                    ("plugin", "hook"),
                    (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 1000),
                ),
                registry.counter(
                    "meshbus_plugin_events_total", "Events a plugin filter counts", ("plugin", "event")
                ),
                registry.histogram(
                    "meshbus_plugin_values",
                    "Values a plugin filter records",
                    ("plugin", "name"),
                    (1, 5, 10, 50, 100, 500, 1000, 5000, 10000),
                ),
            )

    @property
    def remotes(self) -> RemoteFilters:
        """Made on the first REMOTE Plugin: a worker without one never imports the NATS client."""
        if self._remotes is None:
            from meshbus.proxy.filters.plugins.remote import RemoteFilters

            self._remotes = RemoteFilters(self._bus, self._described)
        return self._remotes

    def _described(self, name: str) -> None:
        stale = any(not b.inbound.described and b.resource.spec.filter == name for b in self._live.values())
        if stale and self.on_stale is not None:
            self.on_stale()

    def _selected(
        self, resources: Iterable[Resource], namespace: str, labels: Mapping[str, str]
    ) -> list[Plugin]:
        plugins: list[Plugin] = []
        root = DEFAULT_ROOT_NAMESPACE
        for res in resources:
            if isinstance(res, Plugin):
                plugins.append(res)
            elif isinstance(res, MeshConfig):
                root = res.spec.root_namespace
        return [p for p in plugins if plugin_selects(p.namespace, p.spec, namespace, labels, root)]

    async def prepare(
        self, resources: Iterable[Resource], *, namespace: str, labels: Mapping[str, str]
    ) -> None:
        """Ask the hosts of the REMOTE filters ``resolve`` will bind what they implement, waiting at
        most PREPARE_TIMEOUT (an answer after that still comes in: see ``on_stale``)."""
        names = {
            p.spec.filter
            for p in self._selected(resources, namespace, labels)
            if p.spec.placement == "REMOTE"
        }
        asking = [self.remotes.ask(n) for n in names if n not in self.remotes.infos]
        if asking:
            await asyncio.wait(asking, timeout=PREPARE_TIMEOUT)

    @property
    def active(self) -> PluginSet:
        return self._active

    def resolve(
        self, resources: Iterable[Resource], *, namespace: str, labels: Mapping[str, str]
    ) -> PluginSet:
        """The PluginSet for these resources; RuntimeBuildError when a selected Plugin cannot run."""
        selected = self._selected(resources, namespace, labels)
        workload: Peer | None = None
        bindings = []
        for p in sorted(selected, key=lambda r: (r.namespace, r.name)):
            key = (p.namespace, p.name)
            live = self._live.get(key)
            if live is None or live.resource != p or (not live.inbound.described and live.backend.ready):
                if workload is None:
                    # the plugin SDK and the chain adapter come with the first Plugin (~0.3 MB idle RSS
                    # of a worker without one, bench/run.py's 100-service worker)
                    from meshbus.plugins.http import Peer

                    workload = Peer(namespace=namespace, labels=dict(labels))
                live = self._bind(p, workload)
                old = self._live.get(key)
                self._live[key] = live
                if old is not None and not self._in(old, self._active):
                    old.close()  # made for a build that never went live
            bindings.append(live)
        last = self._last
        if len(bindings) == len(last.bindings) and all(
            a is b for a, b in zip(bindings, last.bindings, strict=True)
        ):
            return last
        self._last = PluginSet(bindings)
        return self._last

    @staticmethod
    def _in(b: Binding, s: PluginSet) -> bool:
        return any(b is x for x in s.bindings)

    def _bind(self, p: Plugin, workload: Peer) -> Binding:
        from meshbus.proxy.filters.plugins.adapter import LocalBackend, PluginFilter, PluginStats

        spec = p.spec
        ref = f"{p.namespace}/{p.name}"
        stats = PluginStats(ref, *(self._metrics[:3] if self._metrics else ()))
        backend: Backend
        if spec.placement == "REMOTE":
            from meshbus.proxy.filters.plugins.remote import RemoteBackend

            backend = RemoteBackend(self.remotes, spec.filter, ref, spec.plugin_config, spec.timeout)
            if not backend.ready and _loop_running():
                self.remotes.ask(spec.filter)  # so the first request finds the answer
        else:
            from meshbus.plugins.loader import PluginConfigError, make_filter
            from meshbus.plugins.registry import PluginLoadError
            from meshbus.proxy.filters.plugins.metrics import RegistryMetrics

            try:
                info = (self._loader or load)(spec.filter)
            except PluginLoadError as exc:
                raise build_error(p, ("spec", "filter"), str(exc).removeprefix("meshbus: ")) from None
            metrics = RegistryMetrics(ref, *self._metrics[3:]) if self._metrics else None
            try:
                inst = make_filter(info, spec.plugin_config, metrics=metrics)
            except PluginConfigError as exc:
                path, message, _ = exc.problems[0]
                raise build_error(p, ("spec", "pluginConfig", *path), message) from None
            except RuntimeError as exc:
                raise build_error(p, ("spec", "filter"), str(exc).removeprefix("meshbus: ")) from None
            backend = LocalBackend(inst, info.hooks, info.request_body, info.response_body)
            if info.request_body.mode == "streamed" and "on_request_body" in backend.is_async:
                raise build_error(
                    p, ("spec", "filter"), f"{spec.filter}: a streamed on_request_body must be a plain def"
                )
        phase = PHASES.get(spec.phase, C.UNSPECIFIED)
        remote = spec.placement == "REMOTE"
        kw = dict(
            workload=workload, fail_open=spec.fail_strategy == "FAIL_OPEN", timeout=spec.timeout,
            stats=stats, remote=remote,
        )  # fmt: skip
        return Binding(
            p,
            backend,
            PluginFilter(ref, phase, spec.priority, backend, direction="inbound", **kw),  # type: ignore[arg-type]
            PluginFilter(ref, phase, spec.priority, backend, direction="outbound", **kw),  # type: ignore[arg-type]
        )

    def activate(self, plugins: PluginSet | None) -> None:
        """``plugins`` went live: close, after the grace, the instances nothing uses any more."""
        plugins = plugins or EMPTY_PLUGINS
        self._active = plugins
        keep = {id(b) for b in plugins.bindings} | {id(b) for b in self._last.bindings}
        gone = [b for b in self._live.values() if id(b) not in keep]
        for b in gone:
            del self._live[(b.resource.namespace, b.resource.name)]
        if gone:
            log.info("plugins removed: %s", ", ".join(b.ref for b in gone))
            self._close_later(gone)

    def _close_later(self, bindings: list[Binding]) -> None:
        def close() -> None:
            for b in bindings:
                b.close()

        if _loop_running() and self.close_grace > 0:
            asyncio.get_running_loop().call_later(self.close_grace, close)
        else:
            close()

    def close(self) -> None:
        """Shutdown: close every instance now."""
        for b in self._live.values():
            b.close()
        self._live.clear()


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


__all__ = ["EMPTY_PLUGINS", "Binding", "PluginRuntime", "PluginSet", "RuntimeBuildError"]
