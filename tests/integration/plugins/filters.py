"""Filters the plugin tests run, in the proxy and behind meshbus-filter-host (``module:Class``)."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

from meshbus.plugins import Filter, LocalReply, Request, Response, buffered


class Stamp(Filter):
    """The issue's example: stamps requests and responses, blocks ``x-block: 1`` with 451."""

    class Config(BaseModel):
        value: str

    def on_request_headers(self, req: Request) -> LocalReply | None:
        if req.headers.get("x-block") == "1":
            return LocalReply(451, b"blocked\n")
        req.headers["x-stamped"] = self.config.value
        req.state["seen"] = req.path
        return None

    def on_response_headers(self, req: Request, resp: Response) -> None:
        resp.headers["x-stamp"] = self.config.value
        resp.headers["x-stamp-path"] = req.state.get("seen", "")


class AsyncStamp(Stamp):
    """The same, with async hooks (awaited by the exchange, as a remote call is)."""

    async def on_request_headers(self, req: Request) -> LocalReply | None:  # type: ignore[override]
        await asyncio.sleep(0)
        return super().on_request_headers(req)

    async def on_response_headers(self, req: Request, resp: Response) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        super().on_response_headers(req, resp)


class Boom(Filter):
    """Raises on every request."""

    def on_request_headers(self, req: Request) -> None:
        raise RuntimeError("boom")


class Hang(Filter):
    """Hangs requests for /hang (an async hook that never completes); others pass."""

    async def on_request_headers(self, req: Request) -> None:
        if req.path.startswith("/hang"):
            await asyncio.Event().wait()


class BodyCheck(Filter):
    """Buffered request body: refuses bodies containing ``bad`` with 422 and the body's length."""

    request_body = buffered(1024)

    def on_request_body(self, req: Request, chunk: bytes, end: bool) -> LocalReply | None:
        if b"bad" in chunk:
            return LocalReply(422, f"bad body of {len(chunk)} bytes\n")
        req.headers.set("x-body-len", str(len(chunk)))
        return None


class Noop(Filter):
    def on_request_headers(self, req: Request) -> None:
        return None


class Claims(Filter):
    """Forwards the verified token's subject (``req.claims``, from the JWT filter's state)."""

    def on_request_headers(self, req: Request) -> None:
        claims = req.claims
        req.headers.set("x-sub", str(claims["sub"]) if claims is not None else "-")
