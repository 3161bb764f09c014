"""docker-compose.yml is checked, not run (no engine here): it must satisfy the compose
specification, and every meshbus command in it must parse with that program's real parser."""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"

# console script -> module whose build_parser() it runs
PROGRAMS = {
    "meshbus-proxy": "meshbus.proxy.__main__",
    "meshbus-config": "meshbus.control.config.__main__",
    "meshbus-discovery": "meshbus.control.discovery.__main__",
    "meshbus-ca": "meshbus.control.ca.__main__",
    "meshctl": "meshbus.control.cli.__main__",
}


def _services() -> dict[str, Any]:
    return YAML(typ="safe").load(COMPOSE.read_text())["services"]


def _commands(service: dict[str, Any]) -> list[list[str]]:
    cmd = service.get("command")
    if not cmd:
        return []
    if cmd[:2] == ["sh", "-c"]:
        # $$(...) is compose's escape for a shell substitution; any word stands in for it here
        script = re.sub(r"\$\$\([^)]*\)", "X", cmd[2]).replace("exec ", "")
        out = []
        for part in script.split("&&"):
            words = shlex.split(part)
            while words and re.match(r"^[A-Z_]+=", words[0]):  # leading VAR=value assignments
                words = words[1:]
            cut = next((i for i, w in enumerate(words) if w.startswith(">")), len(words))
            out.append(words[:cut])
        return out
    return [list(cmd)]


def test_compose_file_matches_the_compose_spec() -> None:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("check-jsonschema not installed (it is in the dev extras)")
    r = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_component_has_a_service() -> None:
    used = {words[0] for svc in _services().values() for words in _commands(svc)}
    assert {"meshbus-proxy", "meshbus-config", "meshbus-discovery", "meshbus-ca", "meshctl"} <= used


@pytest.mark.parametrize("name", sorted(_services()))
def test_commands_parse_with_the_real_parsers(name: str) -> None:
    for words in _commands(_services()[name]):
        program, args = words[0], words[1:]
        if program == "python":
            assert args[0] == "-m"
            importlib.import_module(args[1])
            continue
        if program not in PROGRAMS:
            continue
        parser = importlib.import_module(PROGRAMS[program]).build_parser()
        try:
            parser.parse_args(args)
        except SystemExit as exc:  # argparse exits on a bad flag
            pytest.fail(f"{name}: `{' '.join(words)}` does not parse (exit {exc.code})")


def test_the_config_bootstrap_applies_is_in_the_image() -> None:
    """The bootstrap's ``meshctl apply -f DIR`` names a folder the Dockerfile copies into its WORKDIR.
    (Its content is the user's to edit, so no test reads it: tests/fixtures/demo is the tests' copy.)"""
    dockerfile = (ROOT / "Dockerfile").read_text()
    final = dockerfile[dockerfile.rindex("\nFROM ") :]
    workdir = re.search(r"^WORKDIR (\S+)", final, re.M)
    copies = dict(re.findall(r"^COPY (\S+) (\S+)$", final, re.M))
    applied = [
        w[w.index("-f") + 1] for w in _commands(_services()["bootstrap"]) if w[:2] == ["meshctl", "apply"]
    ]
    assert workdir and applied
    for target in applied:
        rel = Path(target).relative_to(workdir.group(1))
        source = {dst: src for src, dst in copies.items()}[rel.parts[0]]
        assert (ROOT / source / Path(*rel.parts[1:])).is_dir(), target
