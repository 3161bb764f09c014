"""Find fields that are set but marked unimplemented/deprecated in the model (types.unimplemented)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from meshbus.bus.config.types import CONVERTED_KEY, DEPRECATED_KEY, UNIMPLEMENTED_KEY

Path = tuple[str | int, ...]


def _field_alias(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    return info.alias or name


def flagged_fields(model: BaseModel, path: Path = ()) -> Iterator[tuple[Path, str, str | None]]:
    """Yield (yaml path, marker, replacement) for every set field carrying a marker.

    marker is "unimplemented", "deprecated" (ignored) or "converted" (deprecated, still honoured);
    replacement is the field to use instead (deprecated/converted only).
    Fields below a flagged field are not reported again.
    """
    cls = type(model)
    fields_set = model.model_fields_set
    for name, info in cls.model_fields.items():  # declaration order: stable messages across runs
        if name not in fields_set:
            continue
        sub = (*path, _field_alias(cls, name))
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get(UNIMPLEMENTED_KEY):
            yield sub, "unimplemented", None
            continue
        replacement = extra.get(DEPRECATED_KEY)
        if isinstance(replacement, str):
            yield sub, "converted" if extra.get(CONVERTED_KEY) else "deprecated", replacement
            continue
        yield from _walk_value(getattr(model, name), sub)


def _walk_value(value: Any, path: Path) -> Iterator[tuple[Path, str, str | None]]:
    if isinstance(value, BaseModel):
        yield from flagged_fields(value, path)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _walk_value(item, (*path, i))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _walk_value(item, (*path, k))
