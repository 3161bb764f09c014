"""Where a resource (and each of its fields) came from in the operator's YAML."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

PathKey = tuple[str | int, ...]


class Source:
    """File name, the line a resource starts on, and the line of every field below it.

    ``field_lines`` maps a path of YAML keys/indices below the document root
    (e.g. ``("spec", "http", 0, "route", 1, "weight")``) to a 1-based line, so a
    validator that only knows a field path can still point the operator at the line.
    Not part of equality: two resources with the same content are equal wherever they came from.
    """

    __slots__ = ("field_lines", "file", "line")

    def __init__(self, file: str, line: int = 0, field_lines: Mapping[PathKey, int] | None = None) -> None:
        self.file = file
        self.line = line
        self.field_lines: Mapping[PathKey, int] = field_lines or {}

    def line_of(self, path: Sequence[str | int]) -> int:
        """Line of the deepest prefix of ``path`` that exists in the YAML (the resource line if none)."""
        key = tuple(path)
        while key:
            line = self.field_lines.get(key)
            if line is not None:
                return line
            key = key[:-1]
        return self.line

    def __repr__(self) -> str:
        return f"Source({self.file!r}, {self.line})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Source):
            return NotImplemented
        return (self.file, self.line) == (other.file, other.line)

    def __hash__(self) -> int:
        return hash((self.file, self.line))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


UNKNOWN_SOURCE = Source("<unknown>", 0)
