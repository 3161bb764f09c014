"""Header set/add/remove as Istio's ``headers.request`` / ``headers.response`` define them.

Envoy applies removals before additions (header_parser.cc: "remove-before-add is the default"),
then ``set`` replaces every value of a name and ``add`` appends another line. Names are compared
case-insensitively; the lists passed in carry names as the adapter received them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from meshbus.proxy.filters.chain import (
    HOOK_REQUEST_HEADERS,
    HOOK_RESPONSE_HEADERS,
    ROUTER,
    FilterContext,
    HttpFilter,
    LocalReply,
)


@dataclass(frozen=True, slots=True)
class HeaderOps:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.set or self.add or self.remove)

    def apply(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Return a new list with the operations applied (the input is left unchanged)."""
        drop = self.remove | {k for k, _ in self.set}
        out = [(k, v) for k, v in headers if k.lower() not in drop] if drop else list(headers)
        out.extend(self.set)
        out.extend(self.add)
        return out

    def then(self, other: HeaderOps) -> HeaderOps:
        """Operations of ``self`` followed by ``other`` when both are applied in turn, as one."""
        if other.empty:
            return self
        if self.empty:
            return other
        # Envoy applies the route's ops after the destination's; keep both steps' effect in order.
        other_names = other.remove | {k for k, _ in other.set}
        return HeaderOps(
            set=tuple(kv for kv in self.set if kv[0] not in other_names) + other.set,
            add=tuple(kv for kv in self.add if kv[0] not in other_names) + other.add,
            remove=self.remove | other.remove,
        )

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.set:
            out["set"] = dict(self.set)
        if self.add:
            out["add"] = [list(kv) for kv in self.add]
        if self.remove:
            out["remove"] = sorted(self.remove)
        return out


EMPTY_HEADER_OPS: Final = HeaderOps()


def make_header_ops(
    set_: Mapping[str, str] | None = None,
    add: Mapping[str, str] | None = None,
    remove: Iterable[str] | None = None,
) -> HeaderOps:
    ops = HeaderOps(
        set=tuple((k.lower(), v) for k, v in (set_ or {}).items()),
        add=tuple((k.lower(), v) for k, v in (add or {}).items()),
        remove=frozenset(k.lower() for k in (remove or ())),
    )
    return EMPTY_HEADER_OPS if ops.empty else ops


HEADER_OPS: Final = "meshbus.filters.http.header_ops"


@dataclass(frozen=True, slots=True)
class RouteHeaderOps:
    """A route's ``headers.request`` / ``headers.response`` (its destinations carry their own)."""

    request: HeaderOps = EMPTY_HEADER_OPS
    response: HeaderOps = EMPTY_HEADER_OPS
    # Whether any of the route's destinations has request / response operations of its own: a hook
    # with nothing to do is left out of the chain, so those heads keep going through as received.
    destination_request: bool = False
    destination_response: bool = False


class HeaderOpsFilter(HttpFilter):
    """Istio's header operations: the picked destination's, then the route's, so the route wins on
    conflicts (Envoy's order). On requests it hands the router the operations to apply when it writes
    the upstream head (the head goes out as received when there are none); on responses it edits the
    headers. Local replies are left as they are."""

    def __init__(self, ops: RouteHeaderOps) -> None:
        hooks = 0
        if ops.destination_request or not ops.request.empty:
            hooks |= HOOK_REQUEST_HEADERS
        if ops.destination_response or not ops.response.empty:
            hooks |= HOOK_RESPONSE_HEADERS
        super().__init__(HEADER_OPS, ROUTER, 0, hooks)
        self.ops = ops

    def on_request_headers(self, ctx: FilterContext) -> Any:
        dest = ctx.dest
        ops = self.ops.request if dest is None else dest.request_headers.then(self.ops.request)
        if not ops.empty:
            prev = ctx.req_ops  # an earlier filter's (JWT authn removes the token): applied first
            ctx.req_ops = ops if prev is None else prev.then(ops)
        return None

    def on_response_headers(self, ctx: FilterContext) -> LocalReply | None:
        if ctx.is_local:
            return None
        dest = ctx.dest
        hdrs = ctx.resp_headers
        if dest is not None and not dest.response_headers.empty:
            hdrs = dest.response_headers.apply(hdrs)
        if not self.ops.response.empty:
            hdrs = self.ops.response.apply(hdrs)
        ctx.resp_headers = hdrs
        return None
