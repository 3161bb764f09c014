"""``json-schema``: refuse request bodies that do not match a JSON Schema (400 with the schema's error).

The body is buffered (up to ``MAX_BUFFER``; bigger ones get 413) and checked before the request goes
upstream. Only requests with a method in ``methods`` are checked; an empty body is checked as
``null`` unless ``allowEmpty``. The schema itself is checked when the Plugin is applied.

    pluginConfig:
      schema: {type: object, required: [title], properties: {title: {type: string}}}
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from meshbus.plugins import Filter, LocalReply, Request, buffered


class JsonSchemaValidation(Filter):
    class Config(BaseModel):
        model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

        schema_: dict[str, Any] = Field(alias="schema")
        methods: list[str] = Field(default_factory=lambda: ["POST", "PUT", "PATCH"])
        allow_empty: bool = False

        @field_validator("schema_")
        @classmethod
        def _schema(cls, v: dict[str, Any]) -> dict[str, Any]:
            try:
                Draft202012Validator.check_schema(v)
            except SchemaError as exc:
                raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
            return v

    request_body = buffered()

    def setup(self) -> None:
        self.validator = Draft202012Validator(self.config.schema_)
        self.methods = {m.upper() for m in self.config.methods}

    def on_request_body(self, req: Request, chunk: bytes, end: bool) -> LocalReply | None:
        if req.method not in self.methods or (not chunk and self.config.allow_empty):
            return None
        try:
            doc = json.loads(chunk) if chunk else None
        except ValueError as exc:
            return _bad(f"body is not JSON: {exc}", "")
        error = next(
            iter(sorted(self.validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))), None
        )
        if error is None:
            return None
        self.metrics.count("rejected")
        return _bad(error.message, "/" + "/".join(str(p) for p in error.absolute_path))


def _bad(message: str, pointer: str) -> LocalReply:
    body = json.dumps({"error": message, "path": pointer}).encode() + b"\n"
    return LocalReply(400, body, (("content-type", "application/json"),), details="json_schema_rejected")
