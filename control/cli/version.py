"""meshctl version (and meshctl --version)."""

from __future__ import annotations

import argparse
from typing import Any

from meshbus.bus.service import MESHBUS_VERSION


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("version", parents=[common], help="print the meshctl version")
    p.set_defaults(func=run)


def text() -> str:
    return f"meshctl {MESHBUS_VERSION}"


def run(args: argparse.Namespace) -> int:
    print(text())
    return 0
