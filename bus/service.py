"""The service base every control-plane process reuses.

A `BusService` owns a NATS micro service (``$SRV.PING/INFO/STATS``, so ``nats micro ls``
sees it) and a set of typed endpoints served in a queue group, so any number of
replicas share the load. Every failure is answered with the one error envelope
(`ErrorReply{code, message}` + the micro error headers); nothing a peer sends can crash
the process: undecodable, oversized or unknown-schema requests get ``bad_request``-family
errors, unexpected exceptions get ``internal`` and are logged and counted.

Readiness: endpoints declared with ``requires_ready=True`` answer ``not_ready`` until the
component calls `set_ready()` (caches synced), as Linkerd's identity does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar

from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointConfig, Service, ServiceConfig

from . import codec
from .connection import BusConnection
from .errors import BusError, InternalError, NotReadyError
from .rpc import ERROR_CODE_HEADER, ERROR_HEADER
from .schemas.common import ErrorReply, Health, HealthRequest

log = logging.getLogger(__name__)

MESHBUS_VERSION = "0.1.0"
QUEUE_GROUP = "q"  # the micro protocol's default (ADR-32)

# Wire codes are strings; the micro header also gets an HTTP-like number for tools
# (`nats micro stats`) that expect one.
_STATUS = {
    "bad_request": 400,
    "payload_too_large": 413,
    "unknown_schema": 400,
    "permission_denied": 403,
    "not_found": 404,
    "conflict": 409,
    "timeout": 504,
    "unavailable": 503,
    "not_ready": 503,
    "internal": 500,
}

Req = TypeVar("Req")
Rep = TypeVar("Rep")


@dataclass(frozen=True, slots=True)
class EndpointSpec(Generic[Req, Rep]):
    name: str
    """Endpoint name; the subject is ``<root>.v1.<component>.<name>`` unless `subject` is set."""
    request_type: type[Req]
    handler: Callable[[Req], Awaitable[Rep]]
    subject: str | None = None
    requires_ready: bool = True
    subject_check: Callable[[str, Req], None] | None = None
    """Called with the subject a request came on (the endpoint's may be a wildcard) and the decoded
    request; raises a `BusError` when they disagree (a proxy asking on its own subject for another
    node: NATS permissions decide who may publish where, this decides what may be asked there)."""
    sign: Callable[[bytes], Mapping[str, str]] | None = None
    """Extra reply headers computed over the encoded reply (a signature)."""


@dataclass
class EndpointCounters:
    requests: int = 0
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)


class BusService:
    """One component instance: micro service + typed endpoints + health + readiness."""

    def __init__(
        self,
        bus: BusConnection,
        component: str,
        *,
        description: str = "",
        version: str = MESHBUS_VERSION,
        logger: logging.Logger | None = None,
    ) -> None:
        self.bus = bus
        self.component = component
        self.description = description or f"meshbus {component}"
        self.version = version
        self._log = logger or log
        self._endpoints: list[EndpointSpec[Any, Any]] = []
        self._ready = asyncio.Event()
        self._started_at = time.monotonic()
        self._micro: Service | None = None
        self.counters: dict[str, EndpointCounters] = {}
        self.details: dict[str, str] = {}
        self.add_endpoint(EndpointSpec("health", HealthRequest, self._health, requires_ready=False))

    @property
    def instance_id(self) -> str:
        return self._micro.id if self._micro else ""

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def set_ready(self, ready: bool = True) -> None:
        if ready and not self._ready.is_set():
            self._log.info("%s ready", self.component)
        (self._ready.set if ready else self._ready.clear)()

    def add_endpoint(self, spec: EndpointSpec[Any, Any]) -> None:
        if self._micro is not None:
            raise RuntimeError("meshbus: add endpoints before start()")
        self._endpoints.append(spec)
        self.counters[spec.name] = EndpointCounters()

    def subject_of(self, spec: EndpointSpec[Any, Any]) -> str:
        return spec.subject or self.bus.subjects.endpoint(self.component, spec.name)

    async def start(self) -> None:
        self._micro = await add_service(
            self.bus.nc,
            ServiceConfig(
                name=f"meshbus-{self.component}",
                version=self.version,
                description=self.description,
                metadata={"component": self.component, "root": self.bus.subjects.root},
                queue_group=QUEUE_GROUP,
            ),
        )
        for spec in self._endpoints:
            await self._micro.add_endpoint(
                EndpointConfig(
                    name=spec.name,
                    subject=self.subject_of(spec),
                    handler=self._wrap(spec),
                    queue_group=QUEUE_GROUP,
                )
            )
        # Once start() returns, a request from any connection must find the endpoints:
        # the flush round-trip guarantees the server has registered every SUB.
        await self.bus.flush()
        self._log.info(
            "%s serving %d endpoints (instance %s)", self.component, len(self._endpoints), self._micro.id
        )

    async def stop(self) -> None:
        micro, self._micro = self._micro, None
        if micro is not None:
            await micro.stop()

    async def __aenter__(self) -> BusService:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _wrap(self, spec: EndpointSpec[Any, Any]) -> Callable[[Request], Awaitable[None]]:
        counters = self.counters[spec.name]
        max_bytes = self.bus.settings.max_payload

        async def handle(req: Request) -> None:
            counters.requests += 1
            try:
                if spec.requires_ready and not self._ready.is_set():
                    raise NotReadyError(f"{self.component} is not ready yet (still syncing)")
                msg = codec.decode(req.data, req.headers, spec.request_type, max_bytes=max_bytes)
                if spec.subject_check is not None:
                    spec.subject_check(req.subject, msg)
                reply = await spec.handler(msg)
                data, headers = codec.encode(reply)
                if spec.sign is not None:
                    headers.update(spec.sign(data))
            except BusError as exc:
                await self._respond_error(req, spec, counters, exc)
                return
            except Exception as exc:
                self._log.exception("%s.%s failed", self.component, spec.name)
                await self._respond_error(req, spec, counters, InternalError(f"{spec.name}: {exc!r}"))
                return
            await req.respond(data, headers=headers)

        return handle

    async def _respond_error(
        self, req: Request, spec: EndpointSpec[Any, Any], counters: EndpointCounters, exc: BusError
    ) -> None:
        counters.errors += 1
        counters.errors_by_code[exc.code] = counters.errors_by_code.get(exc.code, 0) + 1
        self._log.debug("%s.%s -> %s: %s", self.component, spec.name, exc.code, exc)
        data, headers = codec.encode(ErrorReply(code=exc.code, message=str(exc)))
        headers[ERROR_HEADER] = str(exc)
        headers[ERROR_CODE_HEADER] = str(_STATUS.get(exc.code, 500))
        try:
            await req.respond(data, headers=headers)
        except Exception as send_exc:  # the requester may be gone; never crash on it
            self._log.debug("could not send error reply: %r", send_exc)

    async def _health(self, _req: HealthRequest) -> Health:
        return Health(
            component=self.component,
            instance=self.instance_id,
            version=self.version,
            ready=self.ready,
            uptime_s=time.monotonic() - self._started_at,
            details=dict(self.details),
        )
