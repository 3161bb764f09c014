"""Parse YAML keeping the line of every key and list item (ruamel round-trip nodes carry .lc).

The round-trip tree is turned into plain Python values (what pydantic validates) and a table of
field path -> line in one walk. Aliases are expanded, so the walk is bounded: a recursive alias or
an alias bomb ("billion laughs") becomes a problem report, not a hang — the config service parses
YAML sent by anyone who may apply config.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from meshbus.bus.config.source import PathKey

MAX_NODES = 200_000  # per document, after alias expansion; a 1,000-service file is ~50,000
MAX_DEPTH = 64  # Istio's deepest field path is about 12 levels


@dataclass(frozen=True, slots=True)
class Document:
    data: Any  # plain dict/list/str/int/float/bool/None
    line: int  # 1-based line where the document's content starts
    field_lines: dict[PathKey, int]


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    line: int
    message: str


class _TooComplex(Exception):
    pass


class _Walker:
    __slots__ = ("lines", "nodes")

    def __init__(self) -> None:
        self.lines: dict[PathKey, int] = {}
        self.nodes = 0

    def plain(self, node: Any, path: PathKey) -> Any:
        """Round-trip node -> plain value, recording the line of each key/item below ``path``."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooComplex(f"document has more than {MAX_NODES} values (alias expansion?)")
        if len(path) > MAX_DEPTH:
            raise _TooComplex(f"document nests deeper than {MAX_DEPTH} levels (recursive alias?)")
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                # Keys are strings, as in Istio's JSON form (``8080:`` under portLevelMtls is "8080").
                k = _key(key)
                sub = (*path, k)
                self._line(sub, node, key, is_key=True)
                out[k] = self.plain(value, sub)
            return out
        if isinstance(node, list):
            items = []
            for i, value in enumerate(node):
                sub = (*path, i)
                self._line(sub, node, i, is_key=False)
                items.append(self.plain(value, sub))
            return items
        return _scalar(node)

    def _line(self, path: PathKey, node: Any, key: Any, *, is_key: bool) -> None:
        if not isinstance(node, CommentedMap | CommentedSeq):
            return
        try:
            pos = node.lc.key(key) if is_key else node.lc.item(key)
        except (KeyError, IndexError, TypeError):
            return
        if pos is not None:
            self.lines[path] = pos[0] + 1


def _scalar(node: Any) -> Any:
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.datetime | datetime.date):
        return node.isoformat()
    return node


def _key(key: Any) -> str:
    """Every mapping key as a string; YAML allows null, numbers and even sequences as keys."""
    if isinstance(key, str):
        return str(key)
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return str(_scalar(key))
    if isinstance(key, tuple | list):
        return "[" + ", ".join(_key(k) for k in key) + "]"
    return str(key)


def _start_line(node: Any) -> int:
    lc = getattr(node, "lc", None)
    line = getattr(lc, "line", None)
    return line + 1 if isinstance(line, int) else 1


def parse_documents(text: str) -> Iterator[Document | SyntaxProblem]:
    """Yield each non-empty document, or one SyntaxProblem where parsing stopped."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        for node in yaml.load_all(text):
            if node is None:
                continue
            walker = _Walker()
            try:
                data = walker.plain(node, ())
            except _TooComplex as exc:
                yield SyntaxProblem(_start_line(node), f"YAML too complex: {exc}")
                continue
            yield Document(data, _start_line(node), walker.lines)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 0
        problem = exc.problem or exc.context or "invalid YAML"
        yield SyntaxProblem(line, f"YAML syntax error: {problem}")
    except (YAMLError, RecursionError) as exc:
        yield SyntaxProblem(0, f"YAML syntax error: {exc}")
    except TypeError as exc:
        # ruamel raises this for a complex key it cannot hash (``? {a: [1]}``, found by fuzzing:
        # tests/fuzz/crashes/config/): no config meshbus reads uses one
        yield SyntaxProblem(0, f"YAML not supported: a mapping key that is itself a mapping or list ({exc})")
