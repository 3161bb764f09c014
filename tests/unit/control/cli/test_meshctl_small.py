"""Small things an operator meets first: ``meshctl --version``, and the `meshctl up` table naming
the subjects each component serves under the mesh's real root (it showed a literal ``<root>``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbus.bus.service import MESHBUS_VERSION
from meshbus.control.cli.__main__ import build_parser
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
