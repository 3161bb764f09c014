"""The filter of the plugins issue's example, as a package of its own.

apiVersion: meshbus.io/v1
kind: Plugin
metadata: {name: stamp, namespace: default}
spec:
  selector: {matchLabels: {app: shelf}}
  filter: stamp
  pluginConfig: {value: hello}
"""

from __future__ import annotations

from pydantic import BaseModel

from meshbus.plugins import Filter, LocalReply, Request, Response


class Stamp(Filter):
    class Config(BaseModel):  # pluginConfig is validated against it when the Plugin is applied
        value: str

    def on_request_headers(self, req: Request) -> LocalReply | None:
        if req.headers.get("x-block") == "1":
            return LocalReply(451, b"blocked\n")  # stop here with a local reply
        req.headers["x-stamped"] = self.config.value  # None = continue
        return None

    def on_response_headers(self, req: Request, resp: Response) -> None:
        resp.headers["x-stamp"] = self.config.value
