"""External authorizers (AuthorizationPolicy action CUSTOM): what the authorization filter asks, what
it gets back, and the clients by provider type (sans-IO: the clients themselves live in adapters/).

A provider type (a MeshConfig ``extensionProviders`` field: ``envoyExtAuthzHttp``, ...) is served by a
client registered in `CLIENT_FACTORIES` under that name; the proxy's I/O side registers a client when
a runtime with a provider of its type goes live (adapters/server.py ``AUTHZ_CLIENTS``:
adapters/ext_authz_http.py registers ``envoyExtAuthzHttp``, adapters/ext_authz_nats.py
``meshbusAuthz``). A factory gets the provider's compiled settings
(bus/config/authz/compile.ProviderSpec) and the running server, and returns an object with ``check``.
Adding a provider type is: a client with that method, registered under the type's name, its module
in ``AUTHZ_CLIENTS``, and the name added to `PROVIDER_KINDS` (what the build accepts).

The filter applies the generic part of Envoy's ext_authz semantics to every provider's answer: OK lets
the request on (with the headers the provider adds or removes upstream, and those it adds to the
response); DENIED answers the client with the provider's status, headers and body (flag UAEX,
``ext_authz_denied``); ERROR (unreachable, timeout, 5xx) lets the request on when the provider is
``failOpen``, else answers ``statusOnError`` (default 403, ``ext_authz_error``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

PROVIDER_KINDS: Final = ("envoyExtAuthzHttp", "meshbusAuthz")
"""Provider types this proxy calls; CUSTOM rules naming another type deny what they match (as
Istio does with a provider it cannot use)."""

OK: Final = 0
DENIED: Final = 1
ERROR: Final = 2


class CheckInput:
    """The request as the provider sees it: method, path (normalized, with its query), authority,
    the request headers as received (names lowercase), and the body when the provider wants it."""

    __slots__ = ("body", "headers", "host", "method", "partial", "path", "principal", "source_ip")

    def __init__(
        self,
        method: str,
        path: str,
        host: str,
        headers: list[tuple[str, str]],
        body: bytes | None = None,
        *,
        partial: bool = False,
        source_ip: str = "",
        principal: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.host = host
        self.headers = headers
        self.body = body
        self.partial = partial
        self.source_ip = source_ip
        self.principal = principal


class CheckResult:
    """A provider's answer. ``kind`` OK / DENIED / ERROR. On OK: ``upstream_set`` replaces, ``upstream_add``
    appends and ``upstream_remove`` drops request headers; ``downstream`` goes on the response. On
    DENIED: ``status``, ``headers`` and ``body`` are the reply. ``reason`` says what went wrong (ERROR)."""

    __slots__ = (
        "body",
        "downstream",
        "headers",
        "kind",
        "reason",
        "status",
        "upstream_add",
        "upstream_remove",
        "upstream_set",
    )

    def __init__(
        self,
        kind: int,
        status: int = 200,
        *,
        headers: tuple[tuple[str, str], ...] = (),
        body: bytes = b"",
        upstream_set: tuple[tuple[str, str], ...] = (),
        upstream_add: tuple[tuple[str, str], ...] = (),
        upstream_remove: frozenset[str] = frozenset(),
        downstream: tuple[tuple[str, str], ...] = (),
        reason: str = "",
    ) -> None:
        self.kind = kind
        self.status = status
        self.headers = headers
        self.body = body
        self.upstream_set = upstream_set
        self.upstream_add = upstream_add
        self.upstream_remove = upstream_remove
        self.downstream = downstream
        self.reason = reason

    def __repr__(self) -> str:
        kind = ("OK", "DENIED", "ERROR")[self.kind]
        return f"CheckResult({kind}, {self.status}, reason={self.reason!r})"


class AuthzClient(Protocol):
    def check(self, request: CheckInput) -> Awaitable[CheckResult]:
        """Ask the provider; never raises for the provider's failures (an ERROR result instead)."""
        ...

    def body_waiter(self) -> Any:
        """A future the filter resolves (``set_result(None)``) once the body it waits for is in."""
        ...


ClientFactory = Callable[[Any, Any], AuthzClient]
"""(compile.ProviderSpec, the server: adapters.server.ProxyServer) -> a client."""

CLIENT_FACTORIES: dict[str, ClientFactory] = {}
"""Provider type -> client factory, filled by the I/O side (see the module doc)."""


def register(kind: str, factory: ClientFactory) -> None:
    CLIENT_FACTORIES[kind] = factory
