"""Drive a filter's hooks without a proxy: ``FilterHarness`` (for filter authors' tests, and ours).

    h = FilterHarness(Stamp, {"value": "hi"})
    out = await h.request(headers={"x-block": "1"})
    assert out.reply is not None and out.reply.status == 451

A request goes through the hooks as the proxy runs them: request headers, the request body (whole,
once, for a buffered filter; one chunk then the end for a streamed one), then — unless the filter
answered — the response the test gives (``status``, ``response_headers``, ``response_body``) through
the response hooks, and ``on_done`` last. Config is validated as it is when a Plugin is applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshbus.plugins.api import Filter, LocalReply, run_hook
from meshbus.plugins.http import Headers, Peer, Request, Response
from meshbus.plugins.loader import make_filter
from meshbus.plugins.registry import FilterInfo, info_of

Pairs = Sequence[tuple[str, str]] | Mapping[str, str]


@dataclass
class Outcome:
    reply: LocalReply | None
    """The filter's local reply, if it answered (request or response hooks)."""
    request: Request
    """The request as the filter left it (headers as the upstream would get them)."""
    response: Response | None
    """The response as the filter left it (None when it answered on the request path)."""


class FilterHarness:
    def __init__(self, cls: type[Filter] | FilterInfo, config: Mapping[str, Any] | None = None) -> None:
        self.info = cls if isinstance(cls, FilterInfo) else info_of(cls.__name__.lower(), cls)
        self.filter = make_filter(self.info, config)

    async def _hook(
        self, name: str, req: Request, resp: Response | None, body: bytes = b"", end: bool = True
    ) -> Any:
        if "on_" + name not in self.info.hooks:
            return None
        return await run_hook(self.filter, name, req, resp, body, end)

    async def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        authority: str = "service",
        headers: Pairs = (),
        body: bytes = b"",
        status: int = 200,
        response_headers: Pairs = (),
        response_body: bytes = b"",
        source: Peer | None = None,
        destination: Peer | None = None,
        claims: Mapping[str, Any] | None = None,
    ) -> Outcome:
        req = Request(
            method,
            path,
            authority,
            Headers.of(headers),
            source=source,
            destination=destination,
            claims=claims,
        )
        reply = await self._hook("request_headers", req, None)
        if reply is None and self.info.request_body.wanted:
            if self.info.request_body.mode == "buffered":
                reply = await self._hook("request_body", req, None, body, True)
            elif body:
                reply = await self._hook("request_body", req, None, body, False)
                reply = reply or await self._hook("request_body", req, None, b"", True)
        if reply is not None:
            await self._hook("done", req, Response(reply.status, Headers.of(reply.headers)))
            return Outcome(reply, req, None)
        resp = Response(status, Headers.of(response_headers))
        reply = await self._hook("response_headers", req, resp)
        if reply is None and self.info.response_body.wanted:
            await self._hook("response_body", req, resp, response_body, True)
        await self._hook("done", req, resp)
        return Outcome(reply, req, None if reply is not None else resp)

    def close(self) -> None:
        self.filter.close()
