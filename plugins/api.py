"""The filter SDK: the contract meshbus filters are written against (``from meshbus.plugins import ...``).

A filter is a class with any of five hooks; each may be a plain ``def`` or an ``async def``::

    on_request_headers(req)                 -> None | LocalReply
    on_request_body(req, chunk, end)        -> None | LocalReply   (only with request_body set)
    on_response_headers(req, resp)          -> None | LocalReply
    on_response_body(req, resp, chunk, end) -> None                (only with response_body set)
    on_done(req, resp)                      -> None                (after the response; for logging)

Return None to continue, or a ``LocalReply`` to answer the client here (the upstream is not called,
or its response is replaced). Edit headers through ``req.headers`` / ``resp.headers``. Raising, or
taking longer than the Plugin's ``timeout`` (async hooks and remote calls), is a failure: the
Plugin's ``failStrategy`` decides (FAIL_CLOSE: a 500; FAIL_OPEN: the filter is skipped).

Bodies cost nothing unless asked for: ``request_body`` / ``response_body`` are ``NO_BODY`` (the
default: body hooks never run), ``STREAMED`` (each chunk as it passes; the hook only observes or, on
the request, answers) or ``buffered(limit)`` (the hook runs once with the whole body, at most
``limit`` bytes — a bigger request gets 413; a request is held until its body is in). Response body
hooks observe only: the response is already on its way.

Config: a nested ``Config`` (a pydantic model) is the schema of the Plugin's ``pluginConfig``; it is
validated when the Plugin is applied (unknown fields are errors) and handed to the filter as
``self.config``. One instance is made per Plugin resource per proxy worker when the config is
applied; ``close()`` is called when the Plugin is removed or changed. ``setup()`` runs once after
``self.config`` is set (override it instead of ``__init__``).

``self.log`` is a logger (``meshbus.plugin.<name>``); ``self.metrics`` records into the proxy's
metrics (per filter: calls, errors and time are recorded for every hook without asking; the time
of plain ``def`` hooks is sampled, docs/plugins.md "Metrics").
Keep in sync with docs/plugins.md.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict

HOOK_NAMES: Final = (
    "on_request_headers",
    "on_request_body",
    "on_response_headers",
    "on_response_body",
    "on_done",
)
"""The hooks, in the order a request meets them."""

MAX_BUFFER: Final = 64 * 1024
"""The largest buffered request body a proxy holds for a filter (the proxy's replay buffer)."""


@dataclass(frozen=True, slots=True)
class BodyMode:
    """How a filter takes a body: ``mode`` is ``none``, ``streamed`` or ``buffered`` (up to ``limit``)."""

    mode: str = "none"
    limit: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("none", "streamed", "buffered"):
            raise ValueError(f"meshbus: body mode must be none, streamed or buffered, not {self.mode!r}")
        if self.mode == "buffered" and not 0 < self.limit <= MAX_BUFFER:
            raise ValueError(
                f"meshbus: a buffered body limit must be 1..{MAX_BUFFER} bytes, not {self.limit}"
            )

    @property
    def wanted(self) -> bool:
        return self.mode != "none"


NO_BODY: Final = BodyMode()
STREAMED: Final = BodyMode("streamed")


def buffered(limit: int = MAX_BUFFER) -> BodyMode:
    """The whole body, once, up to ``limit`` bytes (a request with a bigger one is answered 413)."""
    return BodyMode("buffered", limit)


@dataclass(frozen=True, slots=True)
class LocalReply:
    """Answer the client here: ``status``, ``body`` and extra ``headers``; ``details`` goes to the
    access log (why the filter answered)."""

    status: int
    body: bytes | str = b""
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()
    details: str = ""

    def __post_init__(self) -> None:
        if not 100 <= int(self.status) <= 599:
            raise ValueError(f"meshbus: a local reply status must be 100..599, not {self.status}")


class FilterMetrics:
    """What a filter records besides the calls, errors and times the runner records for it.

    The base records nothing (a filter driven by a test harness); the proxy hands each instance one
    that lands in its metrics (``meshbus_plugin_events_total``, ``meshbus_plugin_values``)."""

    def count(self, event: str, amount: float = 1) -> None:
        """Count ``event`` (a small fixed set of names: it is a metric label)."""

    def observe(self, name: str, value: float) -> None:
        """Record one value of ``name`` in a histogram (a small fixed set of names)."""


NULL_METRICS: Final = FilterMetrics()


class Filter:
    """Base class of every meshbus filter. Override the hooks you need (see the module doc).

    Class attributes a filter may set: ``Config`` (pydantic model of its config), ``request_body``
    and ``response_body`` (``NO_BODY``, ``STREAMED`` or ``buffered(limit)``), ``version`` (shown by
    ``meshctl plugins`` when the package has none).
    """

    Config: ClassVar[type[BaseModel] | None] = None
    request_body: ClassVar[BodyMode] = NO_BODY
    response_body: ClassVar[BodyMode] = NO_BODY
    version: ClassVar[str] = ""

    def __init__(
        self,
        config: Any = None,
        *,
        name: str = "",
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
        metrics: FilterMetrics | None = None,
    ) -> None:
        self.name = name or type(self).__name__.lower()
        self.config = config
        self.log = logger or logging.getLogger(f"meshbus.plugin.{self.name}")
        self.metrics = metrics or NULL_METRICS
        self.setup()

    def setup(self) -> None:
        """Prepare state from ``self.config`` (called once, after it is set)."""

    def close(self) -> None:
        """Release what the instance holds (its Plugin was removed or changed)."""

    # The hooks. The base versions do nothing and are never called: only overridden ones run.
    def on_request_headers(self, req: Any) -> Any:
        return None

    def on_request_body(self, req: Any, chunk: bytes, end: bool) -> Any:
        return None

    def on_response_headers(self, req: Any, resp: Any) -> Any:
        return None

    def on_response_body(self, req: Any, resp: Any, chunk: bytes, end: bool) -> Any:
        return None

    def on_done(self, req: Any, resp: Any) -> Any:
        return None


def implemented_hooks(cls: type[Filter]) -> tuple[str, ...]:
    """The hooks ``cls`` overrides, in HOOK_NAMES order (only these are ever called or sent)."""
    return tuple(h for h in HOOK_NAMES if getattr(cls, h) is not getattr(Filter, h))


def body_modes(cls: type[Filter]) -> tuple[BodyMode, BodyMode]:
    """(request, response) body modes, checked against the hooks: a body hook without a mode gets
    STREAMED; a mode without its hook is an error (it would cost a body copy for nothing)."""
    hooks = implemented_hooks(cls)
    req, resp = cls.request_body, cls.response_body
    if "on_request_body" in hooks and not req.wanted:
        req = STREAMED
    if "on_response_body" in hooks and not resp.wanted:
        resp = STREAMED
    if req.wanted and "on_request_body" not in hooks:
        raise TypeError(f"meshbus: {cls.__qualname__} asks for the request body but has no on_request_body")
    if resp.wanted and "on_response_body" not in hooks:
        raise TypeError(f"meshbus: {cls.__qualname__} asks for the response body but has no on_response_body")
    return req, resp


@functools.cache
def strict_config(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with unknown fields forbidden: operator config is decoded strictly, even when the
    filter's own Config does not say so."""
    if model.model_config.get("extra") == "forbid":
        return model
    return type(model.__name__, (model,), {"model_config": ConfigDict(extra="forbid")})


def config_schema(cls: type[Filter]) -> dict[str, Any] | None:
    """The JSON Schema of ``cls.Config``, unknown fields forbidden (what a remote host publishes), or
    None without a Config."""
    if cls.Config is None:
        return None
    return strict_config(cls.Config).model_json_schema()


def check_filter_class(cls: object, where: str) -> type[Filter]:
    """``cls`` as a Filter class, or TypeError saying what ``where`` (entry point) holds instead."""
    if not (isinstance(cls, type) and issubclass(cls, Filter)):
        raise TypeError(f"meshbus: {where} is {cls!r}, not a subclass of meshbus.plugins.Filter")
    if cls.Config is not None and not (isinstance(cls.Config, type) and issubclass(cls.Config, BaseModel)):
        raise TypeError(f"meshbus: {where}: Config must be a pydantic BaseModel subclass")
    if not implemented_hooks(cls):
        raise TypeError(f"meshbus: {where} implements none of the hooks {', '.join(HOOK_NAMES)}")
    body_modes(cls)
    return cls


def hook_list(names: Iterable[str]) -> str:
    """``request_headers,response_headers``: hooks without their ``on_`` prefix, for tables."""
    return ",".join(n.removeprefix("on_") for n in names)


def call_hook(f: Filter, hook: str, req: Any, resp: Any, body: bytes | None, end: bool) -> Any:
    """Call ``f``'s hook ``hook`` (wire name) with the arguments it takes: what it returned, an
    awaitable for an ``async def`` hook."""
    fn: Callable[..., Any] = getattr(f, "on_" + hook)
    if hook == "request_headers":
        return fn(req)
    if hook == "request_body":
        return fn(req, body or b"", end)
    if hook == "response_headers":
        return fn(req, resp)
    if hook == "response_body":
        return fn(req, resp, body or b"", end)
    return fn(req, resp)


async def run_hook(f: Filter, hook: str, req: Any, resp: Any, body: bytes | None, end: bool) -> Any:
    """``call_hook``, awaited when the hook is async."""
    r = call_hook(f, hook, req, resp, body, end)
    if inspect.isawaitable(r):
        r = await r
    return r
