"""Small things an operator meets first: ``meshctl --version``, and the `meshctl up` table naming
the subjects each component serves under the mesh's real root (it showed a literal ``<root>``)."""

from __future__ import annotations

import argparse
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from meshbus.bus.service import MESHBUS_VERSION
from meshbus.control.cli.__main__ import GROUPS, build_parser, main
from meshbus.control.cli.demo_plan import children


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"meshctl {MESHBUS_VERSION}\n"


def test_up_table_names_the_subjects_under_the_real_root(tmp_path: Path) -> None:
    where = {c.name: c.where for c in children(tmp_path, python="python", root="team-a")}
    assert where["meshbus-config"] == "bus: team-a.v1.config.>"
    assert where["meshbus-discovery"] == "bus: team-a.v1.xds.>"
    assert where["meshbus-ca"].startswith("bus: team-a.v1.ca.> (keys in ")
    assert where["meshbus-policy"] == "bus: team-a.v1.policy.>"
    assert not any("<root>" in w for w in where.values())


def test_groups_table_names_what_each_group_registers() -> None:
    """main() imports only the group GROUPS names for the command: a command moved between groups, or
    added, without the table would not parse."""
    for group, commands in GROUPS.items():
        sub = argparse.ArgumentParser().add_subparsers()
        module = importlib.import_module(f"meshbus.control.cli.{group}")
        module.register(sub, argparse.ArgumentParser(add_help=False))
        assert tuple(sub.choices) == commands, group


def test_a_command_imports_only_its_own_group() -> None:
    """`meshctl version` (or ps, logs, cert...) does not pay for the config models and the other
    groups' imports: they were 1.4 s of every start-up."""
    probe = (
        "import sys\n"
        "from meshbus.control.cli.__main__ import main\n"
        "try:\n"
        "    main(['version'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('meshbus.control.cli.')"
        " or m == 'meshbus.bus.config.resources'))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(ast.literal_eval(out.splitlines()[-1]))
    assert "meshbus.control.cli.version" in loaded
    assert not loaded & {"meshbus.bus.config.resources", "meshbus.control.cli.config_cmds"}, loaded


def test_help_and_unknown_commands_still_list_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bogus"])
    err = capsys.readouterr().err
    assert all(repr(command) in err for commands in GROUPS.values() for command in commands), err
