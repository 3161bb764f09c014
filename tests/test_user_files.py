"""Tests never read files the README tells users to edit (samples/): a user who follows the quick
start and changes the demo weights must still see `make test` pass. Tests use tests/fixtures/."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USER_DIRS = ("samples",)
_PATH_RE = re.compile(r"(^|[/\\])(" + "|".join(USER_DIRS) + r")([/\\]|$)")


def user_file_references(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string constant that names a path under a user-edited folder, and every
    use of `demo_plan.SAMPLES` (the default that points there)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _PATH_RE.search(node.value):
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Name | ast.alias) and (
            getattr(node, "id", None) == "SAMPLES" or getattr(node, "name", None) == "SAMPLES"
        ):
            found.append((getattr(node, "lineno", 0), "SAMPLES"))
    return found


def test_the_check_sees_each_way_of_naming_samples() -> None:
    code = (
        "from meshbus.control.cli.demo_plan import SAMPLES\n"
        "a = ROOT / 'samples' / 'demo'\n"
        "b = 'samples/demo/virtual-service.yaml'\n"
        "c = 'tests/fixtures/demo'  # fine\n"
        "d = 'the samples of a histogram'  # prose, fine\n"
    )
    assert sorted(line for line, _ in user_file_references(code)) == [1, 2, 3]


def test_no_test_reads_files_users_are_told_to_edit() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {text!r}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        if path.resolve() != Path(__file__).resolve()
        for line, text in user_file_references(path.read_text())
    ]
    assert not offenders, "tests must use their own copy (tests/fixtures/):\n" + "\n".join(offenders)
