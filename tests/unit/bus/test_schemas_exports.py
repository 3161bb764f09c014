"""bus/schemas/__init__.py resolves its re-exports on first use (PEP 562): every name it lists must
resolve to the class or function of that name in one of its families, in a fresh interpreter, where
no family has been imported before."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

CHECK = """
import importlib, sys
import meshbus.bus.schemas as s
families = [importlib.import_module(f"meshbus.bus.schemas.{f}") for f in s._FAMILIES]
for name in s.__all__:
    value = getattr(s, name)
    homes = [f.__name__ for f in families if getattr(f, name, None) is value]
    assert len(homes) == 1, (name, homes)
try:
    s.NoSuchMessage
except AttributeError:
    pass
else:
    raise AssertionError("an unknown name resolved")
"""


def test_every_listed_name_resolves_to_its_family() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr
