"""``FilterHost``: one SDK filter served on the bus, for proxies whose Plugin says ``placement: REMOTE``.

The host is a NATS micro service (``meshbus-filter-host``, metadata naming the filter) with one
endpoint per hook the filter implements, ``<root>.v1.filter.<name>.<hook>``, in the queue group
``q``: any number of hosts of one filter share the calls. ``info`` answers with what the filter is
and its config's JSON Schema, so meshbus-config can check a Plugin's pluginConfig without the
package installed. The wire format is bus/schemas/filters.py (docs/remote-filters.md).

Instances: one per distinct pluginConfig (by digest), made on its first call and kept (at most
``MAX_INSTANCES``; the least recently used is closed). A config the filter refuses is answered with
an error verdict, and so is a hook that raises or runs past ``hook_timeout``: the proxy applies
the Plugin's failStrategy. ``concurrency`` calls of ``async def`` hooks run at once; more wait in
NATS (a slow filter holds its callers only, and several hosts add capacity). A plain ``def`` hook
runs to its end once called, so it is served as nats-py reads its message, without a task of its
own, its call taken as its bytes (meshbus.bus.inline's ``on_raw``: no nats-py Msg), read by
``call_in`` and its verdict written to the socket at once (meshbus.bus.direct: no pass through
nats-py's subscription and flusher tasks).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

from mypy_extensions import mypyc_attr
from nats.aio.msg import Msg
from nats.micro import add_service
from nats.micro.request import Request as MicroRequest
from nats.micro.service import EndpointConfig, Service, ServiceConfig

from meshbus.bus import codec
from meshbus.bus.connection import BusConnection
from meshbus.bus.direct import NO_HEADERS, write_now
from meshbus.bus.errors import BusError
from meshbus.bus.inline import add_inline_endpoint, read_inline
from meshbus.bus.schemas.filters import (
    MICRO_SERVICE,
    ONE_WAY_HOOKS,
    FilterHostInfo,
    FilterInfoRequest,
    FilterVerdict,
)
from meshbus.bus.service import MESHBUS_VERSION, QUEUE_GROUP
from meshbus.plugins.api import Filter, LocalReply, call_hook, hook_list
from meshbus.plugins.loader import make_filter
from meshbus.plugins.registry import FilterInfo
from meshbus.plugins.remote.wire import HostCall, call_in, host_verdict, pack_verdict

log = logging.getLogger(__name__)

MAX_INSTANCES = 64


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled (setup.py); tests and users subclass it
class FilterHost:
    def __init__(
        self, bus: BusConnection, info: FilterInfo, *, concurrency: int = 16, hook_timeout: float = 30.0
    ) -> None:
        if concurrency < 1:
            raise ValueError("meshbus: --concurrency must be at least 1")
        self.bus = bus
        self.info = info
        self.concurrency = concurrency
        self.hook_timeout = hook_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._instances: OrderedDict[str, Filter | str] = OrderedDict()
        self._recent_key: str | None = None
        self._recent: Filter | str = ""
        """The last call's instance and its key (most calls use the same one: no LRU reordering)."""
        self._micro: Service | None = None
        self.calls = 0
        self.errors = 0

    @property
    def instance_id(self) -> str:
        return self._micro.id if self._micro is not None else ""

    def describe(self) -> FilterHostInfo:
        i = self.info
        return FilterHostInfo(
            filter=i.name,
            hooks=[h.removeprefix("on_") for h in i.hooks],
            package=i.package,
            version=i.version,
            request_body=i.request_body.mode,
            request_body_limit=i.request_body.limit,
            response_body=i.response_body.mode,
            response_body_limit=i.response_body.limit,
            config_schema=i.schema_json(),
            instance=self.instance_id,
            concurrency=self.concurrency,
        )

    async def start(self) -> None:
        i = self.info
        subjects = self.bus.subjects
        self._micro = await add_service(
            self.bus.nc,
            ServiceConfig(
                name=MICRO_SERVICE,
                version=MESHBUS_VERSION,
                description=f"meshbus remote filter {i.name}",
                metadata={
                    "filter": i.name,
                    "package": i.package,
                    "version": i.version,
                    "hooks": hook_list(i.hooks),
                    "config_schema": i.schema_json(),
                    "root": subjects.root,
                    "language": "python",
                },
                queue_group=QUEUE_GROUP,
            ),
        )
        for hook in i.hooks:
            name = hook.removeprefix("on_")
            config = EndpointConfig(
                name=name, subject=subjects.filter_hook(i.name, name), handler=self._handler(name)
            )
            if inspect.iscoroutinefunction(getattr(i.cls, hook)):
                await self._micro.add_endpoint(config)
            else:
                await add_inline_endpoint(
                    self._micro,
                    config,
                    functools.partial(self._serve_now, name),
                    functools.partial(self._serve_raw, name),
                )
        await self._micro.add_endpoint(
            EndpointConfig(name="info", subject=subjects.filter_info(i.name), handler=self._on_info)
        )
        await self.bus.nc.flush()  # every SUB is registered before a caller is told we are up
        read_inline(self.bus.nc)  # calls parsed as their bytes are read
        log.info("serving filter %s (%s) with %d slots", i.name, hook_list(i.hooks), self.concurrency)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop taking calls, give those running ``grace`` seconds, cancel the rest, close instances."""
        micro, self._micro = self._micro, None
        if micro is not None:
            await micro.stop()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        for inst in self._instances.values():
            if isinstance(inst, Filter):
                _close(inst)
        self._instances.clear()
        self._recent_key, self._recent = None, ""

    async def __aenter__(self) -> FilterHost:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _on_info(self, req: MicroRequest) -> None:
        try:
            codec.decode(req.data, req.headers, FilterInfoRequest)
        except BusError:
            pass  # a hand-written `nats req` gets the answer too
        data, headers = codec.encode(self.describe())
        await req.respond(data, headers=headers)

    def _handler(self, hook: str) -> Callable[[MicroRequest], Awaitable[None]]:
        pauses = inspect.iscoroutinefunction(getattr(self.info.cls, "on_" + hook))

        async def handle(req: MicroRequest) -> None:
            if not pauses:
                # A plain def runs to its end once called, in a task or not: serve it here.
                await self._serve(hook, req)
                return
            # micro runs one handler at a time per endpoint: take a slot, then serve in a task, so
            # up to `concurrency` calls run at once and the rest wait in NATS.
            await self._slots.acquire()
            task = asyncio.create_task(self._serve(hook, req))
            self._tasks.add(task)
            task.add_done_callback(self._done)

        return handle

    def _serve_now(self, hook: str, msg: Msg) -> None:
        """A plain def hook's call, served as nats-py reads it (meshbus.bus.direct): decoded, run and
        answered without a pass through the event loop."""
        read_inline(self.bus.nc)  # again after a reconnect (a new reader); a dict lookup otherwise
        self._serve_data(hook, msg.data, msg.headers, msg.reply)

    def _serve_raw(self, hook: str, subject: bytes, reply: bytes, data: bytes) -> None:
        """``_serve_now`` for a plain MSG read ahead of nats-py's parser (meshbus.bus.inline's
        ``on_raw``): the same call, without a nats-py Msg made for it. Only the current reader's
        ``read_inline`` hands one over, so it is in place already."""
        self._serve_data(hook, data, None, reply.decode())

    def _serve_data(self, hook: str, data: bytes, headers: Mapping[str, str] | None, reply: str) -> None:
        v = self._call(hook, data, headers)
        if isinstance(v, FilterVerdict):
            self._answer(hook, reply, v)
            return
        task = asyncio.ensure_future(self._answer_later(hook, reply, v))  # it returned an awaitable
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer_later(self, hook: str, reply: str, pending: Awaitable[FilterVerdict]) -> None:
        self._answer(hook, reply, await pending)

    def _answer(self, hook: str, reply: str, v: FilterVerdict) -> None:
        if hook in ONE_WAY_HOOKS or not reply:
            return
        data = pack_verdict(v)
        if not write_now(self.bus.nc, reply, data, "", NO_HEADERS):
            task = asyncio.ensure_future(self._publish(hook, reply, data))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _publish(self, hook: str, reply: str, data: bytes) -> None:
        try:
            await self.bus.nc.publish(reply, data)
        except Exception as exc:  # the caller may be gone (timed out); never crash on it
            log.debug("could not answer %s: %r", hook, exc)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    def _instance(self, call: HostCall) -> Filter | str:
        key = call.config_digest or repr(sorted((call.config or {}).items()))
        if key == self._recent_key:  # the last call's: the most recent in the order already
            return self._recent
        hit = self._instances.get(key)
        if hit is not None:
            self._instances.move_to_end(key)
            self._recent_key, self._recent = key, hit
            return hit
        try:
            inst: Filter | str = make_filter(
                self.info, call.config, logger=logging.getLogger(f"meshbus.plugin.{self.info.name}")
            )
        except Exception as exc:  # a config the filter refuses is the caller's problem: say so
            inst = str(exc)
        self._instances[key] = inst
        while len(self._instances) > MAX_INSTANCES:
            _, old = self._instances.popitem(last=False)
            if isinstance(old, Filter):
                _close(old)
        self._recent_key, self._recent = key, inst
        return inst

    async def _serve(self, hook: str, req: MicroRequest) -> None:
        v = self._call(hook, req.data, req.headers)
        if not isinstance(v, FilterVerdict):
            v = await v
        if hook in ONE_WAY_HOOKS:
            return
        try:
            await req.respond(pack_verdict(v))
        except Exception as exc:  # the caller may be gone (timed out); never crash on it
            log.debug("could not answer %s: %r", hook, exc)

    def _call(
        self, hook: str, data: bytes, headers: Mapping[str, str] | None
    ) -> FilterVerdict | Awaitable[FilterVerdict]:
        """Decode a call and run its hook: the verdict, or one to await when the hook awaits."""
        self.calls += 1
        try:
            call = call_in(data, headers, self.bus.settings.max_payload)
            inst = self._instance(call)
            if isinstance(inst, str):
                return self._failed(hook, inst)
            result = call_hook(inst, hook, call.req, call.resp, call.body, call.end)
        except Exception as exc:
            return self._failed(hook, f"{type(exc).__name__}: {exc}")
        # None first: inspect.isawaitable(None) is an interpreted call and an ABC check, on every call
        if result is not None and inspect.isawaitable(result):
            return self._awaited(hook, result, call)
        return self._verdict(hook, result, call)

    async def _awaited(self, hook: str, result: Awaitable[object], call: HostCall) -> FilterVerdict:
        try:
            done = await asyncio.wait_for(result, self.hook_timeout)
        except TimeoutError:
            return self._failed(hook, f"{hook} ran past the host's {self.hook_timeout:g}s")
        except Exception as exc:
            return self._failed(hook, f"{type(exc).__name__}: {exc}")
        return self._verdict(hook, done, call)

    def _verdict(self, hook: str, result: object, call: HostCall) -> FilterVerdict:
        try:
            if result is not None and not isinstance(result, LocalReply):
                raise TypeError(f"hook returned {type(result).__name__}, not None or a LocalReply")
            return host_verdict(result, call)
        except Exception as exc:
            return self._failed(hook, f"{type(exc).__name__}: {exc}")

    def _failed(self, hook: str, error: str) -> FilterVerdict:
        self.errors += 1
        log.warning("filter %s %s failed: %s", self.info.name, hook, error)
        return FilterVerdict(error=error)


def _close(f: Filter) -> None:
    try:
        f.close()
    except Exception:
        log.exception("filter %s failed to close", f.name)
