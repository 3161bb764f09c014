"""``header-transform``: set, add and remove request and response headers, values from templates.

A template is text with ``${...}`` placeholders, filled per request: ``${method}``, ``${path}``,
``${authority}``, ``${scheme}``, ``${request_id}``, ``${route}``, ``${header.NAME}`` (a request
header), ``${source.principal}``, ``${source.namespace}``, ``${destination.namespace}``,
``${destination.service}``; on responses also ``${status}`` and ``${response.NAME}``. An unknown
placeholder is refused when the Plugin is applied. Missing values are empty.

    pluginConfig:
      request:
        set: {x-caller: "${source.principal}", x-path: "${path}"}
        remove: [x-internal]
      response:
        add: {x-served-by: "${destination.service}"}
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

from meshbus.plugins import Filter, Request, Response

_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)(?:\.([A-Za-z0-9_.-]+))?\}")
_SIMPLE = {"method", "path", "authority", "scheme", "request_id", "route", "status"}
_DOTTED = {"header", "response", "source", "destination"}
_PEER_FIELDS = {"principal", "namespace", "service_account", "service"}


def _check(template: str) -> str:
    for m in _PLACEHOLDER.finditer(template):
        name, arg = m.group(1), m.group(2)
        if name in _SIMPLE and arg is None:
            continue
        if name in ("source", "destination") and arg in _PEER_FIELDS:
            continue
        if name in ("header", "response") and arg:
            continue
        raise ValueError(f"unknown placeholder ${{{m.group(0)[2:-1]}}}")
    return template


def render(template: str, req: Request, resp: Response | None = None) -> str:
    def value(m: re.Match[str]) -> str:
        name, arg = m.group(1), m.group(2)
        v: Any
        if name == "header":
            v = req.headers.get(arg)
        elif name == "response":
            v = resp.headers.get(arg) if resp is not None else None
        elif name in ("source", "destination"):
            v = getattr(req.source if name == "source" else req.destination, arg)
        elif name == "status":
            v = resp.status if resp is not None else None
        else:
            v = getattr(req, name)
        return "" if v is None else str(v)

    return _PLACEHOLDER.sub(value, template)


class Ops(BaseModel):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @field_validator("set", "add")
    @classmethod
    def _templates(cls, v: dict[str, str]) -> dict[str, str]:
        for t in v.values():
            _check(t)
        return v


class HeaderTransform(Filter):
    class Config(BaseModel):
        request: Ops = Field(default_factory=Ops)
        response: Ops = Field(default_factory=Ops)

    def on_request_headers(self, req: Request) -> None:
        _apply(self.config.request, req.headers, req, None)

    def on_response_headers(self, req: Request, resp: Response) -> None:
        _apply(self.config.response, resp.headers, req, resp)


def _apply(ops: Ops, headers: Any, req: Request, resp: Response | None) -> None:
    for name in ops.remove:
        headers.delete(name)
    for name, t in ops.set.items():
        headers.set(name, render(t, req, resp))
    for name, t in ops.add.items():
        headers.add(name, render(t, req, resp))
