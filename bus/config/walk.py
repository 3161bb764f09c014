"""Find fields that are set but marked deprecated in the model (types.deprecated)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel

from meshbus.bus.config.types import DEPRECATED_KEY

Path = tuple[str | int, ...]


def deprecated_fields(model: BaseModel, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Yield (yaml path, the field to use instead) for every set field Istio deprecated.

    Fields below a deprecated field are not reported again. Whether a field is enforced is not
    decided here but in fates.py.
    """
    cls = type(model)
    for name, info in cls.model_fields.items():  # declaration order: stable messages across runs
        if name not in model.model_fields_set:
            continue
        sub = (*path, info.alias or name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        replacement = extra.get(DEPRECATED_KEY)
        if isinstance(replacement, str):
            yield sub, replacement
            continue
        yield from _walk_value(getattr(model, name), sub)


def _walk_value(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, BaseModel):
        yield from deprecated_fields(value, path)
    elif isinstance(value, tuple | list):
        for i, item in enumerate(value):
            yield from _walk_value(item, (*path, i))
    elif isinstance(value, dict):
        for k, item in value.items():
            yield from _walk_value(item, (*path, k))
