"""What a filter sees of a request and its response: ``Request``, ``Response``, ``Headers``, ``Peer``.

These are views, made by whoever runs the filter: the proxy (over the live request), a remote filter
host (from the wire message, meshbus.plugins.remote.wire) or ``meshbus.plugins.testing`` (from plain
values). A filter edits headers through ``req.headers`` / ``resp.headers``; the runner carries the
edits to the request the proxy forwards (or the response it sends). Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from mypy_extensions import mypyc_attr


def _checked(name: str, text: str) -> str:
    """The lowercase name of a header a filter sets to ``text``; a CR, LF or NUL in the name or value
    would split the head the proxy writes upstream (header injection), so it is refused."""
    lower = _names.get(name)
    if lower is None:
        if not name or any(c in name for c in "\r\n\0: "):
            raise ValueError(f"meshbus: header {name!r} has a character HTTP does not allow")
        if len(_names) >= 1024:  # names come from filters' code: few, but do not grow without end
            _names.clear()
        lower = _names[name] = name.lower()
    if "\r" in text or "\n" in text or "\0" in text:
        raise ValueError(f"meshbus: the value of header {name!r} has a character HTTP does not allow")
    return lower


_names: Final[dict[str, str]] = {}  # Final: a C static in the compiled module, not a globals lookup
"""Header names a filter has set, checked, and their lowercase form (a filter sets the same few)."""


_lowered: Final[dict[str, str]] = {}
"""Names filters read and their lowercase form: a dict hit costs less than ``str.lower``'s new string.
A name already lowercase maps to itself (the same object: ``is`` tells a reader it is lowercase)."""


def _lower(name: str) -> str:
    lower = name.lower()
    if lower == name:
        lower = name
    if len(_lowered) >= 1024:  # names come from filters' code: few, but do not grow without end
        _lowered.clear()
    _lowered[name] = lower
    return lower


# Compiled with mypyc with the proxy (setup.py); still classes a filter's own code may subclass.
@mypyc_attr(allow_interpreted_subclasses=True)
class Headers:
    """A case-insensitive multimap over a list of ``(name, value)`` pairs, edited in place.

    ``get`` returns the first value (or ``default``); ``getall`` every value in order; ``set``
    replaces every value of a name with one; ``add`` appends another; ``delete`` removes every value.
    Names are stored lowercase, as HTTP/2 and the proxy's parser keep them. ``on_change`` (the
    runner's) is called with the lowercase name after every edit.
    """

    __slots__ = ("_items", "_on_change")

    def __init__(
        self,
        items: list[tuple[str, str]] | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._items = items if items is not None else []
        self._on_change = on_change

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> Headers:
        """A detached multimap from pairs or a mapping (tests, the remote host)."""
        src = pairs.items() if isinstance(pairs, Mapping) else pairs
        return cls([(str(k).lower(), str(v)) for k, v in src])

    def get(self, name: str, default: str | None = None) -> str | None:
        n = _lowered.get(name)
        if n is None:
            n = _lower(name)
        for k, v in self._items:
            if k == n:
                return v
        return default

    def getall(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self._items if k == n]

    def set(self, name: str, value: str) -> None:
        text = value if type(value) is str else str(value)
        n = _checked(name, text)
        items = self._items
        for k, _ in items:
            if k == n:  # copy the list only when there is something to drop (setting a new name is usual)
                items[:] = [kv for kv in items if kv[0] != n]
                break
        items.append((n, text))
        self._changed(n, True)

    def add(self, name: str, value: str) -> None:
        text = str(value)
        n = _checked(name, text)
        self._items.append((n, text))
        self._changed(n, True)

    def delete(self, name: str) -> None:
        n = name.lower()
        items = self._items
        kept = [kv for kv in items if kv[0] != n]
        if len(kept) != len(items):
            items[:] = kept
            self._changed(n)

    def replace(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Hold exactly ``pairs``, in their order (what a remote filter's verdict says)."""
        new = [(str(k).lower(), str(v)) for k, v in pairs]
        old = self._items
        names = {k for k, _ in old} | {k for k, _ in new}
        changed = [n for n in names if [v for k, v in old if k == n] != [v for k, v in new if k == n]]
        old[:] = new
        for n in sorted(changed):
            self._changed(n)

    def _changed(self, name: str, checked: bool = False) -> None:
        """``name`` was edited; ``checked``: by ``set``/``add``, whose value ``_checked`` let through
        (no CR, LF or NUL)."""
        if self._on_change is not None:
            self._on_change(name)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        self.set(name, value)

    def __delitem__(self, name: str) -> None:
        self.delete(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self._items:
            if k not in seen:
                seen.add(k)
                yield k

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` pair, in order (a copy)."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class Peer:
    """One end of the request: its SPIFFE principal (``spiffe://td/ns/NS/sa/SA``, None when the peer
    is not authenticated), its namespace and service account (from the principal, or the workload's
    own), and its workload labels where the proxy knows them (its own workload's)."""

    principal: str | None = None
    namespace: str | None = None
    service_account: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    service: str | None = None
    """The service's host name, where known (the destination of an outbound request)."""

    @classmethod
    def from_principal(cls, principal: str | None, **kw: Any) -> Peer:
        """A peer named by its SPIFFE ID; namespace and service account are read from it."""
        ns = sa = None
        if principal and principal.startswith("spiffe://"):
            parts = principal[len("spiffe://") :].split("/")
            if len(parts) >= 5 and parts[1] == "ns" and parts[3] == "sa":
                ns, sa = parts[2], parts[4]
        return cls(principal, kw.pop("namespace", None) or ns, kw.pop("service_account", None) or sa, **kw)


@dataclass(frozen=True, slots=True)
class TraceContext:
    """W3C trace context of the request (``traceparent``), None fields when it carries none."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        parts = self.traceparent.split("-")
        return parts[1] if len(parts) >= 4 else ""

    @property
    def span_id(self) -> str:
        parts = self.traceparent.split("-")
        return parts[2] if len(parts) >= 4 else ""

    @property
    def sampled(self) -> bool:
        parts = self.traceparent.split("-")
        try:
            return len(parts) >= 4 and bool(int(parts[3], 16) & 1)
        except ValueError:
            return False


@mypyc_attr(allow_interpreted_subclasses=True)
class Request:
    """One request as a filter sees it. Change headers through ``headers``; the rest is read-only.

    ``claims``: the verified JWT claims when a RequestAuthentication accepted a token (the JWT filter
    puts them in the request's filter state as ``request.auth``), else None. ``route``: the name of
    the route the request matched. ``source`` / ``destination``: the two workloads (``Peer``).
    ``state``: a dict for the filter's own per-request data (one per filter, kept from the request
    hooks to ``on_done``).

    The fields are properties: the proxy hands filters a subclass that reads them from the live
    request only when the filter asks (meshbus.proxy.filters.plugins.adapter).
    """

    __slots__ = (
        "_authority",
        "_claims",
        "_destination",
        "_headers",
        "_method",
        "_path",
        "_request_id",
        "_route",
        "_scheme",
        "_source",
        "_state",
    )

    def __init__(
        self,
        method: str,
        path: str,
        authority: str,
        headers: Headers,
        *,
        scheme: str = "http",
        request_id: str | None = None,
        route: str = "",
        source: Peer | None = None,
        destination: Peer | None = None,
        claims: Mapping[str, Any] | Callable[[], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self._method = method
        self._path = path
        self._authority = authority
        self._headers = headers
        self._scheme = scheme
        self._request_id = request_id
        self._route = route
        self._source = source or Peer()
        self._destination = destination or Peer()
        self._claims = claims
        self._state: dict[str, Any] | None = None

    @property
    def method(self) -> str:
        return self._method

    @property
    def path(self) -> str:
        return self._path

    @property
    def authority(self) -> str:
        return self._authority

    @property
    def headers(self) -> Headers:
        return self._headers

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def request_id(self) -> str | None:
        return self._request_id

    @property
    def route(self) -> str:
        return self._route

    @property
    def source(self) -> Peer:
        return self._source

    @property
    def destination(self) -> Peer:
        return self._destination

    @property
    def claims(self) -> Mapping[str, Any] | None:
        c = self._claims
        return c() if callable(c) else c

    @property
    def state(self) -> dict[str, Any]:
        s = self._state
        if s is None:  # made on first use: most filters keep nothing
            s = self._state = {}
        return s

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = value

    @property
    def trace(self) -> TraceContext | None:
        h = self.headers
        tp = h.get("traceparent")
        return None if tp is None else TraceContext(tp, h.get("tracestate"))

    def __repr__(self) -> str:
        return f"Request({self.method} {self.authority}{self.path})"


@mypyc_attr(allow_interpreted_subclasses=True)
class Response:
    """The response a filter sees: ``status`` and ``headers`` (edit them in response-header hooks)."""

    __slots__ = ("headers", "status")

    def __init__(self, status: int, headers: Headers) -> None:
        self.status = status
        self.headers = headers

    def __repr__(self) -> str:
        return f"Response({self.status})"
