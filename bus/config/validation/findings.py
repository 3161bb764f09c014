"""Per-resource collector used by every validator: paths in, FieldErrors with file:line out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshbus.bus.config.resources import Resource
from meshbus.bus.config.result import FieldError, Level, Validation, format_path
from meshbus.bus.config.source import PathKey, Source


class Findings:
    """Collects errors/warnings about one resource; the line of each comes from its field path."""

    __slots__ = ("label", "path_map", "resource", "validation")

    def __init__(
        self,
        resource: Resource,
        validation: Validation | None = None,
        *,
        label: str = "",
        path_map: Callable[[Sequence[str | int]], PathKey] | None = None,
    ) -> None:
        self.resource = resource
        self.validation = validation if validation is not None else Validation()
        self.label = label or resource.ref
        # The loader's salvage pass checks a copy with bad list items dropped; this maps paths back.
        self.path_map = path_map

    def _make(
        self, level: Level, path: Sequence[str | int], message: str, value: object, code: str = ""
    ) -> FieldError:
        src = self.resource.source
        if self.path_map is not None:
            path = self.path_map(path)
        return FieldError(
            source=Source(src.file, src.line_of(path), src.field_lines),
            path=format_path(path),
            message=message,
            value=value,
            resource=self.label,
            level=level,
            code=code,
        )

    def error(self, path: Sequence[str | int], message: str, value: object = None) -> None:
        self.validation.add(self._make(Level.ERROR, path, message, value))

    def warn(self, path: Sequence[str | int], message: str, value: object = None) -> None:
        self.validation.add(self._make(Level.WARNING, path, message, value))

    def analysis(self, level: Level, code: str, path: Sequence[str | int], text: str) -> None:
        """A cross-resource message (istioctl analyze style, e.g. IST0101)."""
        self.validation.add(self._make(level, path, text, None, code))
