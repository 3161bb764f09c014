"""``request-log``: one log line per request and response, with named headers and JSON fields redacted.

Logged through the filter's logger (``meshbus.plugin.request-log``) at INFO, after the response
(``on_done``). Bodies are logged only with ``logBodies`` (up to ``bodyLimit`` bytes each); JSON
bodies have the ``redactFields`` replaced at any depth.

    pluginConfig: {redactHeaders: [authorization, cookie], redactFields: [password], logBodies: true}
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from meshbus.plugins import STREAMED, Filter, Request, Response

REDACTED = "[redacted]"


def redact_json(doc: Any, fields: set[str]) -> Any:
    if isinstance(doc, dict):
        return {k: REDACTED if k.lower() in fields else redact_json(v, fields) for k, v in doc.items()}
    if isinstance(doc, list):
        return [redact_json(v, fields) for v in doc]
    return doc


class RequestLog(Filter):
    class Config(BaseModel):
        model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

        redact_headers: list[str] = Field(default_factory=lambda: ["authorization", "cookie", "set-cookie"])
        redact_fields: list[str] = Field(default_factory=list)
        log_bodies: bool = False
        body_limit: int = Field(default=4096, ge=0, le=65536)

    request_body = STREAMED
    response_body = STREAMED

    def setup(self) -> None:
        self.headers_out = {h.lower() for h in self.config.redact_headers}
        self.fields_out = {f.lower() for f in self.config.redact_fields}

    def _keep(self, req: Request, key: str, chunk: bytes) -> None:
        if not self.config.log_bodies:
            return
        kept = req.state.setdefault(key, bytearray())
        room = self.config.body_limit - len(kept)
        if room > 0:
            kept += chunk[:room]

    def on_request_body(self, req: Request, chunk: bytes, end: bool) -> None:
        self._keep(req, "request_body", chunk)

    def on_response_body(self, req: Request, resp: Response, chunk: bytes, end: bool) -> None:
        self._keep(req, "response_body", chunk)

    def on_done(self, req: Request, resp: Response) -> None:
        self.log.info("%s", json.dumps(self.record(req, resp), sort_keys=True))

    def record(self, req: Request, resp: Response) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": req.method,
            "path": req.path,
            "authority": req.authority,
            "request_id": req.request_id,
            "status": resp.status,
            "request_headers": self._headers(req.headers.items()),
            "response_headers": self._headers(resp.headers.items()),
        }
        for key in ("request_body", "response_body"):
            if key in req.state:
                out[key] = self._body(bytes(req.state[key]))
        return out

    def _headers(self, items: list[tuple[str, str]]) -> dict[str, str]:
        return {k: REDACTED if k in self.headers_out else v for k, v in items}

    def _body(self, data: bytes) -> Any:
        try:
            return redact_json(json.loads(data), self.fields_out)
        except ValueError:
            return data.decode("utf-8", "replace")
