"""What `meshctl up` runs besides NATS: the demo mesh, as far as meshbus has grown.

Today: the standalone proxy (issue 3) in front of two versions of a demo "reviews"
service, routed 90/10 by demo Istio YAML. Each later component adds its process here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .up import Child


def children(data_dir: Path, *, python: str) -> list[Child]:

    out: list[Child] = []
    if importlib.util.find_spec("meshbus.proxy.__main__") is None:
        return out
    return out
