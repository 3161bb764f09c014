"""Validation results: every error and warning, collected, never stopping at the first."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meshbus.bus.config.source import UNKNOWN_SOURCE, Source


class Level(enum.Enum):
    ERROR = "Error"
    WARNING = "Warning"
    INFO = "Info"


def format_path(path: Sequence[str | int]) -> str:
    """``("spec", "http", 0, "route")`` -> ``spec.http[0].route``."""
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            out += f".{seg}" if out else str(seg)
    return out


def format_value(value: object) -> str:
    """Quote strings like Istio's %q; show other scalars as YAML would."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_NO_VALUE = object()


@dataclass(frozen=True, slots=True)
class FieldError:
    """One finding about one field.

    ``path`` is the YAML field path (camelCase keys, ``[i]`` indices) below the document root.
    ``value`` is the offending value, shown as ``(got ...)``; ``None`` means "nothing to show".
    ``code`` is set for cross-resource analysis messages (``IST0101``); those render in
    istioctl-analyze style, the others in ``file:line: resource: path: message`` style.
    """

    source: Source
    path: str
    message: str
    value: object = None
    resource: str = ""
    level: Level = Level.ERROR
    code: str = ""

    @property
    def line(self) -> int:
        return self.source.line

    def render(self) -> str:
        if self.code:
            where = f"{self.resource} {self.source}" if self.resource else str(self.source)
            return f"{self.level.value} [{self.code}] ({where}) {self.message}"
        parts = [str(self.source)]
        if self.resource:
            parts.append(self.resource)
        if self.path:
            parts.append(self.path)
        text = ": ".join(parts) + ": " + self.message
        if self.value is not None:
            text += f" (got {format_value(self.value)})"
        return text

    def __str__(self) -> str:
        return self.render()


@dataclass(slots=True)
class Validation:
    """Errors and warnings from any number of checks; empty in gives empty out."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)
    infos: list[FieldError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, finding: FieldError) -> None:
        if finding.level is Level.ERROR:
            self.errors.append(finding)
        elif finding.level is Level.WARNING:
            self.warnings.append(finding)
        else:
            self.infos.append(finding)

    def extend(self, other: Validation | Iterable[FieldError]) -> None:
        items = other.messages() if isinstance(other, Validation) else other
        for finding in items:
            self.add(finding)

    def messages(self) -> list[FieldError]:
        """All findings: errors, then warnings, then infos, each in the order found."""
        return [*self.errors, *self.warnings, *self.infos]

    def render(self) -> str:
        return "\n".join(m.render() for m in self.messages())


class ConfigError(Exception):
    """Root of meshbus.bus.config errors; messages start with "meshbus: "."""

    code = "config_error"


class LoadError(ConfigError):
    """Raised by ``LoadResult.raise_for_errors()``; carries the whole Validation."""

    code = "config_invalid"

    def __init__(self, validation: Validation) -> None:
        self.validation = validation
        n = len(validation.errors)
        lines = "\n".join("  " + e.render() for e in validation.errors)
        super().__init__(f"meshbus: invalid config ({n} error{'s' if n != 1 else ''}):\n{lines}")


def no_source_error(message: str, file: str = "") -> FieldError:
    return FieldError(Source(file) if file else UNKNOWN_SOURCE, "", message)
