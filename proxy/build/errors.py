"""RuntimeBuildError: a config that validated but cannot be applied by this proxy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshbus.bus.config.proxy_kinds import Resource


class RuntimeBuildError(ValueError):
    """``meshbus: <file>[:line]: <Kind> <ns>/<name>: <field path>: <message>``."""

    def __init__(self, message: str, *, resource: str = "", path: str = "") -> None:
        super().__init__(message)
        self.resource = resource
        self.path = path


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


def build_error(resource: Resource, path: Sequence[str | int], message: str) -> RuntimeBuildError:
    """Error naming the resource's file (and the field's line when the loader recorded it)."""
    source = resource.source  # "<unknown>" when no loader made it; "snapshot vN" in mesh mode
    line = source.line_of(path)
    where = f"{source.file}:{line}" if line else str(source.file)
    meta = resource.metadata
    ref = f"{resource.kind} {meta.namespace}/{meta.name}"
    text = format_path(path)
    return RuntimeBuildError(f"meshbus: {where}: {ref}: {text}: {message}", resource=ref, path=text)
